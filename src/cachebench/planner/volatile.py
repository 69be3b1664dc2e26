"""Values in one text that change between requests: dates, times, epoch stamps, UUIDs, request
ids and counters. The prompt linter's detector (rule CB201).

The per-call diagnosis knows that a byte range *has* changed and only names it; the linter sees
one request, so a value is flagged only when the text itself says it was taken per request or
per session. The shapes are the diagnosis's own (``VALUE_SHAPES`` of
:mod:`cachebench.diagnose.classify`); of their matches, these are flagged:

- **Minted per request**: a UUID (not the nil one); an id with a per-request prefix (``req_``,
  ``msg_``, ``sess_``, ``trace-``, ``chatcmpl-``, ... and 8+ characters with a digit).
- **An instant**: a date and time to the second (an ISO 8601 ``T`` date-time: to the minute),
  a time of day to the second, Unix epoch seconds or milliseconds. A person writing a prompt
  rounds and a clock does not: ``:00`` seconds, a stamp on the hour or ending in ``0000`` is no
  instant. Its date lies within 5 years of ``now`` (2015-2040 without ``now``): a stamp taken
  per request is recent; history is not.
- **After a cue**: a time, or a recent date (as above), after *today*, *current* or *now* in
  its sentence (a few words between). A time, or a date within 2 days of ``now`` (in 2015-2040
  without it), after *as of*, *generated*, *updated*, *timestamp*, ... or a label (``Date:``,
  ``"created_at": ``, ``time=``): those may name any point (a static *as of June 17, 2019*). An
  id (8+ varying characters, 2+ digits) after ``request_id``, ``trace id``, ``session``,
  ``correlation-id``, ...; a number but 0 after *turn*, *attempt*, *retry*, *iteration*,
  *counter*, ``message #``, ``seq``, ... unless a unit, *times* or ``%`` follows (a quantity).
- **Near now**: any date within 2 days of ``now``.

Not flagged: a date or time with neither cue nor precision (*founded on March 5, 1998*), one
glued to a word (``ISO-8601``, ``3.12.1``, ``gpt-4o-2024-08-06``), prices, status codes, hex
colours, phone numbers, placeholders (``conv_123``), digests or git SHAs without an id cue. A
value introduced as an example (*for example*, *e.g.*, *such as*, *in the form*, *Ex:*) is
documentation, unless a cue or a label stands nearer to it, or it is near now.

Speed (800 KB of prose in ~12 ms, of JSON numbers in ~25 ms): every kind holds a digit, so a
byte mask of the digits comes first and the locators run only around clusters of them. Each
locator starts with a character class the regex engine skips to; the shapes run only where one
hit. No Python loop per character, nor per number of a text full of numbers.
"""

from __future__ import annotations

import calendar
import re
from dataclasses import dataclass

# The diagnosis's value shapes, so the linter and the per-call diagnosis agree on what a date or
# an id looks like.
from ..diagnose.classify import VALUE_SHAPES
from ..types import ValueType

__all__ = ["Volatile", "after_request_cue", "find_volatile"]


@dataclass(frozen=True, slots=True)
class Volatile:
    """One value likely to change per request: its kind, where it is (``text[start:end]``), why."""

    value_type: ValueType
    start: int
    end: int
    why: str


_SHAPES: dict[str, re.Pattern[str]] = dict(VALUE_SHAPES)
_PERIOD = (1420070400.0, 2208988800.0)  # 2015-01-01 .. 2040-01-01 UTC, when there is no now
_DAY, _YEAR = 86400.0, 365.2425 * 86400.0
_LIMITS = {2**31 - 1, 2**31}  # signed 32-bit limits: sizes and sentinels, not stamps

# The mask: a byte per character, "1" for a digit. A value starts at most _LEAD characters before
# its first digit (a weekday, a cue, a prefix); locators run to _TRAIL after a cluster's last one.
_DIGIT_MASK = bytes(0x31 if 0x30 <= b <= 0x39 else 0x30 for b in range(256))
_LEAD, _TRAIL = 48, 64
_GAP = b"0" * (_LEAD + _TRAIL + 256)  # digits closer than this are one cluster, one window
_LONG = 512  # a longer window looks for its cue words by name: they are rarer than separators
_SEPARATED = re.compile(r"[-/.:](?<=[0-9][-/.:])(?:(?<=[-/.])[0-9]{1,2}[-/.][0-9]|(?<=:)[0-5][0-9])")
_MONTH = re.compile(r"(?:Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec)[a-z]*\.?,? [0-9]")
_DASHED = re.compile(r"[_-](?:(?P<uuid>(?<=-)(?:[0-9a-fA-F]{4}-){3})|(?=[A-Za-z]*+[0-9])[A-Za-z0-9]{8})")
_S = "[\\s:=#\"']"  # what stands between a cue and its value
# How every id or counter cue ends: request_id, trace id, session, idempotency-key, message #, ...
_CUE_ENDS = ["id", "key", "req", "sess", "trace", "request", "session", "correlation", "msg", "seq", "turn"]
_CUE_ENDS += ["retry", "count", "index", "number", "attempt", "message", "counter", "iteration"]
_NEXT = "[A-Za-z_-]*+[0-9]"  # a token with a digit in it (in its first part)
_CUED = re.compile(  # the first separator after a cue, by the words before each separator
    rf"{_S}(?<=[A-Za-z]{_S})(?={_S}{{0,3}}+{_NEXT})(?:"
    + "|".join(
        f"(?<=(?i:{'|'.join(w for w in _CUE_ENDS if len(w) == n)}){_S})" for n in {*map(len, _CUE_ENDS)}
    )
    + ")"
)
_CUE_WORDS = [  # in lower case; "id" only at the end of a word ("request_id", not "id")
    re.compile(rf"{w}{'(?<=[a-z_ -]id)' if w == 'id' else ''}(?={_S}{{1,4}}+{_NEXT})") for w in _CUE_ENDS
]
_ID_CUE = re.compile(
    r"(?i:\b(?:x-)?(?:request|req|trace|session|sess|correlation)(?:[ _-]?id)?|\b(?:span|call|run|message|msg"
    r"|conversation|thread|event|transaction|execution|invocation|idempotency)[ _-]?(?:id|key))$"
)
# The cues of an id that is new on every request (not a session's or a customer's own).
_REQUEST_CUE = re.compile(
    r"(?i:\b(?:x-)?(?:request|req|trace|correlation|span|idempotency)(?:[ _-]?(?:id|key))?)[\s\"':=#]*$"
)
_COUNTER_CUE = re.compile(
    r"(?i:\b(?P<cue>(?:turn|attempt|retry|iteration)(?:[ _](?:number|count|index))?|counter"
    r"|(?:message|msg|turn|seq|sequence)[ _](?:#|number)|(?:message|msg) ?#|seq))[\s\"':=]*$"
)
_ID = re.compile(rf"{_S}*+([A-Za-z0-9][\w-]{{4,}}[A-Za-z0-9])\b")
_COUNT = re.compile(  # not a quantity
    rf"{_S}*+([0-9]{{1,6}})\b(?![.,:/-]?[0-9]|\s*(?:%|(?:times?|x|more|(?:milli)?seconds?|ms|s|minutes?)\b))"
)
_ID_PREFIX = re.compile(r"[A-Za-z]{2,12}[_-]")
_PREFIXES = {"req", "request", "msg", "sess", "session", "trace", "span", "corr", "conv", "chatcmpl", "call"}
_PREFIXES |= {"toolu", "resp", "run", "evt"}
_WORD_BEFORE = re.compile(r"(?<![\w-])[A-Za-z]{2,8}$")
_EPOCH = re.compile(r"(?<![\w.+])(?:[0-9]{13}|[0-9]{10})(?:\.[0-9]{1,9})?(?!\w|[.,:/-][0-9])")
_LEAD_IN = re.compile(r"(?:(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun)[a-z]*,? )?(?:[0-9]{1,2} )?$")

# The context of a value, read back to the start of its sentence.
_CUE = re.compile(
    r"(?i:\b(?:(?P<now>today|tonight|current(?:ly)?|now)|as (?:of|at)|generated|updated|refreshed"
    r"|last[ -]modified|time ?stamp)\b)[^\n]{0,32}$"
)
_LABELLED = re.compile(
    r"(?i:\b(?:date|time|datetime|ts|sent|created|received|[a-z]+_(?:at|date|time|ts)))[\"']?\s*[:=]\s*[\"']?$"
)
_QUOTING = " :=\"'"  # stripped from the end of a cue quoted in a reason
_EXAMPLE = re.compile(
    r"(?i:\b(?:for (?:example|instance)|e\.g\.|eg\b|i\.e\.|such as|like|ex:|examples?\b|in the form"
    r"|format(?:ted)?|sample|placeholder))"
)
_SENTENCE_END = re.compile(r"[.!?]\s+(?=[A-Z])")
_GLUED_BEFORE, _GLUED_AFTER = re.compile(r"[\w./-]"), re.compile(r"\w|[.:/-][0-9]")
_CLOCK = re.compile(r"([0-9]{1,2}):([0-9]{2})(?::([0-9]{2})([.,][0-9]+)?)?")
_NUMERIC_DATE = re.compile(r"([0-9]{1,4})([./-])([0-9]{1,2})\2([0-9]{1,4})")
_NAMED_DATE = re.compile(
    r"([A-Za-z]+)\.? ([0-9]{1,2})(?:st|nd|rd|th)?,? ([0-9]{4})|([0-9]{1,2}) ([A-Za-z]+)\.?,? ([0-9]{4})"
)
_MONTH_NAME = re.compile(  # its group number is the month's
    r"(?i:(jan(?:uary)?)|(feb(?:ruary)?)|(mar(?:ch)?)|(apr(?:il)?)|(may)|(june?)|(july?)|(aug(?:ust)?)"
    r"|(sept?(?:ember)?)|(oct(?:ober)?)|(nov(?:ember)?)|(dec(?:ember)?))"
)

_Found = tuple[int, int, int, ValueType, str]  # start, end, rank (the surer kind first), kind, why


def find_volatile(text: str, *, now: float | None = None) -> list[Volatile]:
    """The values of ``text`` likely to change between requests, in order, none overlapping.

    ``now`` (Unix seconds) is when the request is sent: instants are looked for within 5 years
    of it and any date within 2 days of it is flagged; without it, instants from 2015-2040."""
    period = _PERIOD if now is None else (now - 5 * _YEAR, now + 5 * _YEAR)
    mask = text.encode("ascii", "replace").translate(_DIGIT_MASK)  # still a byte per character
    found: list[_Found] = []
    at = mask.find(b"1" * 10)  # the first digit of a run of 10 or more
    while at >= 0:
        found += _epoch(text, at, period)
        end = mask.find(b"0", at)
        at = -1 if end < 0 else mask.find(b"1" * 10, end)
    at = mask.find(b"1")
    while at >= 0:  # a window around each cluster of digits
        gap = mask.find(_GAP, at)
        lo, hi = max(0, at - _LEAD), min(len(text), (len(text) if gap < 0 else gap) + _TRAIL)
        found += _window(text, mask, lo, hi, period, now)
        at = -1 if gap < 0 else mask.find(b"1", gap)
    return _without_overlaps(found)


def _window(
    text: str, mask: bytes, lo: int, hi: int, period: tuple[float, float], now: float | None
) -> list[_Found]:
    """The values found by the locators in ``text[lo:hi]``, around one cluster of digits."""
    found: list[_Found] = []
    starts = {m.start() for m in _MONTH.finditer(text, lo, hi)}
    for m in _SEPARATED.finditer(text, lo, hi):
        run = m.start()
        while run > 0 and mask[run - 1] == 0x31:
            run -= 1
        starts.add(run)  # the first digit of the number before the separator
    covered = -1
    for start in sorted(starts):
        if start >= covered:  # not inside the date or time just judged
            hits, covered = _dated(text, start, period, now)
            found += hits
    for m in _DASHED.finditer(text, lo, hi):
        word = _WORD_BEFORE.search(text, max(0, m.start() - 9), m.start())
        if m.group("uuid"):
            found += _minted(text, m.start() - 8, "uuid")
        elif word is not None and word.group().lower() in _PREFIXES:
            found += _minted(text, word.start(), "hex_id")
    lower = text[lo:hi].lower() if hi - lo > _LONG else ""
    if len(lower) == hi - lo:
        cues = sorted({lo + m.end() for word in _CUE_WORDS for m in word.finditer(lower)})
    else:
        cues = [m.start() for m in _CUED.finditer(text, lo, hi)]
    return found + [hit for at in cues for hit in _cued(text, at)]


def _without_overlaps(found: list[_Found]) -> list[Volatile]:
    """In each run of overlapping values, the longest first, then the surer kind, each kept if
    it overlaps none kept."""
    kept: list[Volatile] = []
    group: list[_Found] = []
    for f in [*sorted(found), (2**62, 2**62, 0, "number", "")]:
        if group and f[0] >= max(g[1] for g in group):
            chosen: list[Volatile] = []
            for start, end, _, kind, why in sorted(group, key=lambda g: (g[0] - g[1], g[2], g[0])):
                if all(end <= v.start or v.end <= start for v in chosen):
                    chosen.append(Volatile(kind, start, end, why))
            kept += sorted(chosen, key=lambda v: v.start)
            group = []
        group.append(f)
    return kept


def _epoch(text: str, at: int, period: tuple[float, float]) -> list[_Found]:
    """Unix seconds or milliseconds at ``text[at]``, if flagged."""
    m = _EPOCH.match(text, at)
    millis = m is not None and len(m.group().split(".")[0]) == 13
    seconds = float(m.group()) / (1000 if millis else 1) if m is not None else 0.0
    if m is None or int(seconds) in _LIMITS or seconds % 3600 == 0 or seconds % 10_000 == 0:
        return []  # on the hour or a round number: written by a person
    if not period[0] <= seconds < period[1] or not _not_an_example(text, at):
        return []
    return [(*m.span(), 3, "timestamp", f"an epoch timestamp in {'milli' if millis else ''}seconds")]


def _minted(text: str, at: int, shape: str) -> list[_Found]:
    """A UUID, or an id with a per-request prefix (``req_8f3a2b1c9d``), at ``text[at]``."""
    m = _SHAPES[shape].match(text, at) if at >= 0 else None
    prefix = _ID_PREFIX.match(m.group()) if m is not None and shape == "hex_id" else None
    if m is None or not m.group().strip("0-") or (shape == "hex_id" and prefix is None):
        return []  # the nil UUID is a constant
    if not _not_an_example(text, at):
        return []
    if prefix is None:
        return [(*m.span(), 0, "uuid", "a UUID")]
    return [(*m.span(), 4, "hex_id", f"an id with the per-request prefix {prefix.group()!r}")]


def after_request_cue(text: str, start: int) -> bool:
    """Whether the value at ``text[start]`` follows a cue of a per-request id (``Request id:``,
    ``trace_id=``, ``X-Request-ID``, ``idempotency key``): an id there is new on every request,
    whatever its shape (a UUID too)."""
    return _REQUEST_CUE.search(text, max(0, start - 40), start) is not None


def _cued(text: str, at: int) -> list[_Found]:
    """An id or a counter after the cue that ends at ``text[at]``."""
    count = _COUNT.match(text, at)
    counter = _COUNTER_CUE.search(text, max(0, at - 24), count.start(1)) if count is not None else None
    if count is not None and counter is not None and count.group(1).strip("0"):  # 0: where it starts
        return [(*count.span(1), 6, "number", f"a counter after {counter.group('cue')!r}")]
    value = _ID.match(text, at)
    cue = _ID_CUE.search(text, max(0, at - 40), at) if value is not None else None
    if value is None or cue is None:
        return []
    prefix = _ID_PREFIX.match(value.group(1))
    varying = value.group(1)[prefix.end() if prefix is not None else 0 :]
    if len(varying) < 8 or sum(c.isdigit() for c in varying) < 2 or _SHAPES["date"].fullmatch(value.group(1)):
        return []  # a placeholder (conv_123, abc123), a name (URLLib3Session), a date
    return [(*value.span(1), 5, "hex_id", f"an id after {cue.group()!r}")]


def _dated(text: str, at: int, period: tuple[float, float], now: float | None) -> tuple[list[_Found], int]:
    """The date or time that starts at ``text[at]`` or just before (a weekday, a day) if it is
    flagged, and where it ends."""
    lead = _LEAD_IN.search(text, max(0, at - 16), at) if at and text[at - 1] == " " else None
    for start in (at,) if lead is None else (lead.start(), at):
        for rank, shape in ((1, "timestamp"), (2, "date")):  # the longer shape first
            m = _SHAPES[shape].match(text, start)
            if m is not None and _GLUED_AFTER.match(text, m.end()):  # "14:32:05 Amazon": AM/PM took "Am"
                m = _SHAPES[shape].match(text, start, start + len(m.group().rstrip(" .AaPpMm")))
            if m is not None and m.end() > at:
                hit = _judge(text, m.start(), m.end(), shape, period, now)
                return ([] if hit is None else [(m.start(), m.end(), rank, *hit)]), m.end()
    return [], at + 1


def _judge(
    text: str, start: int, end: int, shape: str, period: tuple[float, float], now: float | None
) -> tuple[ValueType, str] | None:
    """The kind and the reason when ``text[start:end]``, a date or a timestamp, is flagged."""
    if _GLUED_BEFORE.match(text, max(0, start - 1), start) or _GLUED_AFTER.match(text, end):
        return None  # part of a name, a version, an address
    value = text[start:end]
    clock = _CLOCK.search(value) if shape == "timestamp" else None
    if shape == "timestamp" and (
        not clock or int(clock[1]) > 24 or int(clock[2]) > 59 or int(clock[3] or 0) > 60
    ):
        return None  # epoch digits (judged by _epoch), or no time of day (32:05)
    dates = _dates(value)
    recent = any(period[0] - _DAY <= d < period[1] for d in dates)
    near = now is not None and any(now - 3 * _DAY < d <= now + 2 * _DAY for d in dates)
    # "Today", "current", "now" speak of the request's own time: any recent date. "As of",
    # "updated", a label may name any point (a static "as of June 17, 2019"): only the request's.
    dated = not dates or (near if now is not None else recent)
    sentence, example = _context(text, start)
    cue = _CUE.search(text, max(start - 48, sentence, example), start)
    label = _LABELLED.search(text, max(0, start - 32), start)
    what = "a date" if clock is None else "a date and time" if dates else "a time"
    kind: ValueType = "date" if clock is None else "timestamp"
    said = cue if cue is not None and (dated or (cue.group("now") and recent)) else label if dated else None
    if said is not None:
        return kind, f"{what} after {said.group().rstrip(_QUOTING)!r}"
    if clock is not None and example < 0 and (recent or not dates):
        minute, second, fraction = clock.group(2), clock.group(3), clock.group(4) or ""
        iso = "T" in value[: clock.start()] and bool(dates)
        if fraction.strip(".,0") or second not in (None, "00") or (iso and minute != "00"):
            return kind, f"{what} to the second" if second else f"{what} in ISO 8601"
    return (kind, f"{what} within 2 days of now") if near else None


def _context(text: str, start: int) -> tuple[int, int]:
    """Where the sentence of ``text[start]`` starts (at most 200 characters back, never before a
    line break), and where the last example marker in it before ``start`` ends (-1: none)."""
    lo = max(0, start - 200, text.rfind("\n", max(0, start - 200), start) + 1)
    for end in _SENTENCE_END.finditer(text, lo, start + 1):
        lo = min(end.end(), start)
    return lo, max((m.end() for m in _EXAMPLE.finditer(text, lo, start)), default=-1)


def _not_an_example(text: str, start: int) -> bool:
    """No example marker before ``start`` in its sentence, or a cue or a label after it."""
    sentence, example = _context(text, start)
    lo = max(start - 48, sentence, example)
    return example < 0 or any(p.search(text, lo, start) for p in (_CUE, _LABELLED))


def _dates(value: str) -> list[float]:
    """Unix seconds (UTC midnight) of the date in ``value``: every reading of an ambiguous one."""
    readings: list[tuple[int, int, int]] = []
    numeric, named = _NUMERIC_DATE.search(value), _NAMED_DATE.search(value)
    if numeric is not None:
        a, sep, b, c = numeric.groups()
        if len(a) == 4:
            readings = [(int(a), int(b), int(c))]
        elif len(c) == 4 or (len(c) == 2 and sep != "."):
            y = int(c) + (2000 if len(c) == 2 else 0)
            readings = [(y, int(b), int(a)), (y, int(a), int(b))]  # day first, month first
    elif named is not None:
        word, day, year = named.group(1, 2, 3) if named.group(1) else named.group(5, 4, 6)
        month = _MONTH_NAME.fullmatch(word)
        readings = [(int(year), month.lastindex or 0, int(day))] if month is not None else []
    return [
        calendar.timegm((y, m, d, 0, 0, 0)) for y, m, d in readings if y and 1 <= m <= 12 and 1 <= d <= 31
    ]
