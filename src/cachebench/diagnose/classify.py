"""What kind of change broke a prefix: a volatile value, a re-ordering, a re-serialisation, or
other content. Pure functions over one call's own text and digests: nothing of the prompt is
kept by them.

- :func:`volatile_value` names the value a changed byte range sits in, from the current
  request's text alone: a ``timestamp`` (ISO 8601, RFC 2822/HTTP dates, a time of day next to
  a date, Unix epoch seconds or milliseconds), a ``date``, a ``uuid``, a ``hex_id`` (request
  and trace ids: hex runs, ULIDs, ``req_``-style prefixed ids with digits) or a ``number``.
- :func:`normalized_digest` hashes a block as its content, not its rendering: dict keys sorted
  at every level, JSON carried inside a string (a profile dumped with ``json.dumps``) parsed and
  sorted too, whitespace runs collapsed, and whole floats written as integers. Two blocks with equal normalized digests but
  different bytes were re-serialised.
- :func:`reordered` tells a re-ordered run of blocks (the same tools in another order) from
  changed ones.

Where a layer print's change is classified with them: :func:`cachebench.diagnose.prints.compare`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import orjson
import xxhash

from ..types import ValueType

__all__ = [
    "VALUE_SHAPES",
    "ValueType",
    "normalized_digest",
    "reordered",
    "volatile_in",
    "volatile_value",
]


# A month's name or its usual abbreviation, and nothing longer ("Decimal" is no month).
_MONTHS = (
    r"(?:January|February|March|April|May|June|July|August|September|October|November|December"
    r"|Jan|Feb|Mar|Apr|Jun|Jul|Aug|Sept|Sep|Oct|Nov|Dec)\b\.?"
)
_DAYS = r"(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun)[a-z]*,?"
_DATE = (
    r"\d{4}-\d{2}-\d{2}"  # 2026-12-07
    r"|\d{4}/\d{1,2}/\d{1,2}"  # 2026/12/07
    r"|(?<!\d)(?<!\d\.)\d{1,2}[./-]\d{1,2}[./-]\d{2,4}(?!\d|\.\d)"  # 07.12.2026, 12/07/2026 (not 10.0.0.12)
    rf"|{_MONTHS} \d{{1,2}}(?:st|nd|rd|th)?,? \d{{4}}"  # December 7, 2026
    rf"|\d{{1,2}} {_MONTHS},? \d{{4}}"  # 7 December 2026
)
_TIME = r"\d{1,2}:\d{2}(?::\d{2}(?:[.,]\d{1,9})?)?(?: ?[AaPp]\.?[Mm]\.?(?![A-Za-z]))?(?: ?(?:Z|UTC|GMT|[+-]\d{2}:?\d{2}))?"
# Tried in order at each position; the longest match that covers the change wins, so a date
# with its time is a timestamp and a bare time of day next to nothing is one too.
VALUE_SHAPES: tuple[tuple[ValueType, re.Pattern[str]], ...] = (
    (
        "uuid",
        re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"),
    ),
    (
        "timestamp",
        re.compile(
            rf"(?:{_DAYS} )?(?:{_DATE})(?:[T ]|, | at ){_TIME}"  # a date and a time
            rf"|{_DAYS} \d{{1,2}} {_MONTHS} \d{{4}} {_TIME}"  # RFC 2822 / HTTP date
            rf"|\b{_TIME}\b"  # a time of day
            r"|\b[12]\d{9}(?:\d{3})?(?:\.\d+)?\b"  # Unix epoch seconds or milliseconds (2001-2286)
        ),
    ),
    ("date", re.compile(rf"(?:{_DAYS} )?(?:{_DATE})")),
    (
        "hex_id",
        re.compile(
            r"\b[0-9A-HJKMNP-TV-Z]{26}\b"  # ULID
            r"|\b[A-Za-z]{2,8}_[A-Za-z0-9]*\d[A-Za-z0-9]{5,}\b"  # req_8f3a2b1c, msg_01XyZ...
            r"|\b[A-Za-z]{2,8}-(?=[A-Za-z0-9]*\d)[A-Za-z0-9]{4,}\b"  # req-0001, TICKET-4711
            r"|\b(?=[0-9a-fA-F]*[a-fA-F])(?=[0-9a-fA-F]*\d)[0-9a-fA-F]{8,}\b"  # hex, letters and digits
        ),
    ),
    ("number", re.compile(r"[-+]?\d+(?:[.,]\d+)*")),
)
_WINDOW = 64  # characters either side of the change looked at for the value around it


def volatile_value(text: str, start: int, end: int) -> ValueType | None:
    """The kind of volatile value the changed range ``text[start:end]`` sits in, or None.

    The range (where the current text differs from the earlier one) must lie inside one
    value of that kind, or inside adjacent values separated only by punctuation and spaces
    (a date and a time in separate fields); a change that reaches into ordinary words is no
    volatile value. An empty range (a deletion) is looked at as the character at ``start``.
    """
    if not 0 <= start <= len(text):
        return None
    end = max(end, start + 1)
    end = min(end, len(text))
    lo = max(0, start - _WINDOW)
    hi = min(len(text), end + _WINDOW)
    window = text[lo:hi]
    s, e = start - lo, end - lo
    for value_type, pattern in VALUE_SHAPES:
        covered = _covered(pattern, window, s, e)
        if covered:
            return value_type
    return None


_DIGITS = re.compile(r"\d+")
_MAX_RUNS = 64  # digit runs looked around in one changed range


def volatile_in(text: str, start: int, end: int) -> tuple[ValueType, int, int] | None:
    """The volatile value a change somewhere in ``text[start:end]`` most likely is, with its span.

    For a range known to differ from an earlier text only in digits and hex letters (a chunk
    of a layer print: wider than the value): every value of the kinds above that overlaps the
    range is a candidate, the first kind in :data:`VALUE_SHAPES` order wins (a uuid before a
    timestamp before a date before a hex id before a number), and the span returned covers the
    candidates of that kind. None when no value overlaps the range. Every kind holds a digit,
    so the patterns run only around the range's digit runs (a range may be kilobytes long)."""
    end = max(end, start + 1)
    windows: list[list[int]] = []
    for n, run in enumerate(_DIGITS.finditer(text, max(0, start - _WINDOW), min(len(text), end + _WINDOW))):
        if n >= _MAX_RUNS:
            break
        lo, hi = max(0, run.start() - _WINDOW), min(len(text), run.end() + _WINDOW)
        if windows and lo <= windows[-1][1]:
            windows[-1][1] = hi
        else:
            windows.append([lo, hi])
    for value_type, pattern in VALUE_SHAPES:
        spans = [
            (m.start(), m.end())
            for lo, hi in windows
            for m in pattern.finditer(text, lo, hi)
            if m.end() > m.start() and m.start() < end and m.end() > start
        ]
        if spans:
            return value_type, spans[0][0], spans[-1][1]
    return None


_GLUE = re.compile(r"[\s,;:./T-]*")


def _covered(pattern: re.Pattern[str], window: str, s: int, e: int) -> bool:
    """True when ``window[s:e]`` lies inside matches of ``pattern`` that follow one another
    with only punctuation and spaces between them."""
    spans = [m.span() for m in pattern.finditer(window) if m.end() > m.start()]
    at = s
    while at < e:
        inside = next((b for a, b in spans if a <= at < b), None)
        if inside is None:
            return False
        at = inside
        if at >= e:
            return True
        glue = _GLUE.match(window, at)
        nxt = glue.end() if glue is not None else at
        if nxt >= e:
            return True  # the change ends in the punctuation after the value
        at = nxt
    return True


def _closing(text: str, at: int) -> int:
    """The index just past the bracket that closes the one at ``text[at]`` (JSON strings
    skipped), or -1."""
    depth = 0
    quoted = False
    i = at
    while i < len(text):
        c = text[i]
        if quoted:
            if c == "\\":
                i += 1
            elif c == '"':
                quoted = False
        elif c == '"':
            quoted = True
        elif c in "{[":
            depth += 1
        elif c in "}]":
            depth -= 1
            if depth == 0:
                return i + 1
        i += 1
    return -1


def _normal_text(text: str) -> Any:
    """A string as content: a string that is JSON through and through becomes its value; JSON
    objects and arrays inside prose are re-rendered with sorted keys; whitespace runs are one
    space."""
    stripped = text.strip()
    if stripped[:1] in ("{", "[") and stripped[-1:] in ("}", "]"):
        try:
            return _normal(orjson.loads(stripped))
        except orjson.JSONDecodeError:
            pass
    out: list[str] = []
    i = 0
    while True:
        at = min((j for j in (text.find("{", i), text.find("[", i)) if j >= 0), default=-1)
        if at < 0:
            break
        end = _closing(text, at)
        if end < 0:
            break
        try:
            inner = orjson.dumps(_normal(orjson.loads(text[at:end])), option=orjson.OPT_SORT_KEYS)
        except orjson.JSONDecodeError:
            out.append(text[i : at + 1])
            i = at + 1
            continue
        out.append(text[i:at])
        out.append(inner.decode())
        i = end
    out.append(text[i:])
    return " ".join("".join(out).split())


def _normal(value: Any) -> Any:
    """``value`` as content: keys are sorted when it is dumped; strings per :func:`_normal_text`;
    a whole float is its integer (``1.0`` and ``1`` are one number written two ways)."""
    if isinstance(value, str):
        return _normal_text(value)
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        return int(value)
    if isinstance(value, dict):
        return {str(k): _normal(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_normal(v) for v in value]
    return value


def normalized_digest(payload: Any) -> int:
    """A digest of ``payload`` as content: equal for renderings that differ only in key order
    (at any depth, JSON inside strings included), whitespace or ``1.0`` against ``1``."""
    data = orjson.dumps(_normal(payload), option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS)
    return xxhash.xxh3_64_intdigest(data)


def reordered(before: Sequence[int], after: Sequence[int]) -> bool:
    """True when ``after`` holds the same block digests as ``before`` in another order."""
    # (Sorted digests are equal exactly when the two hold each digest as many times.)
    return len(before) == len(after) and list(before) != list(after) and sorted(before) == sorted(after)
