"""Secrets in prompt excerpts, found by detect-secrets' plugins and replaced by ``[REDACTED]``.

Excerpts exist only with ``capture_text=True``, so the detector (Yelp's ``detect-secrets``) is
the optional extra ``cachebench[redact]``, imported on first use; the tracker calls
:func:`require_redactor` when it is built, so a missing extra fails there and not in the middle
of a diagnosis.

What finds a secret, all of it read from the library rather than copied:

- every pattern plugin it ships (AWS, GitHub, GitLab, OpenAI, Slack, Stripe, JWT, PyPI, URLs
  with a password, private key headers, ...), each match confirmed by the plugin itself;
- its keyword detector (``password``, ``pwd``, ``secret``, ``api_key``, ``db_pass``, ...
  followed by ``:``, ``=``, ``==`` ...), with both its config-file and its quoted-value tables
  (prompt text is both), and its filters for templates, ``$VARS`` and indirect references;
- its high-entropy detectors: base64 runs over 4.5 bits a character anywhere in the text
  (what ``detect-secrets scan --string`` does), hex inside quotes (its default), with its
  filters for sequences and UUIDs.

The library scans source files line by line and returns values, not positions, so this module
runs the plugins' own compiled expressions, over the text with JSON escapes undone (excerpts are
cut from canonical bytes), one line at a time. Written here, where the library has no plugin:
the body of a private key (its plugin matches the ``BEGIN`` line only), ``Authorization:`` and
``Bearer`` credentials, a secret named in prose (``the admin password is Tr0ub4dor&3``), and the
LLM providers' own key formats, found by their prefix however little random their body looks
(Anthropic ``sk-ant-...``, OpenAI ``sk-proj-``, ``sk-svcacct-``, ``sk-admin-``, Google ``AIza...``).
Also here, filters that fit the library's config-file keyword table to prompts, which mix prose
and code: an unquoted value ends at the first space, and a comparison (``password == stored``),
a type (``password: str``) or a variable (``api_key=api_key``) is not a value; and its ID filter
reads the key a random value is given to (``"tool_call_id": "call_..."``), not the whole line.

Known limits (pinned in the tests): a keyword followed by ``:`` or ``=`` hides the next word
even in prose (``forgot your password: click the link`` loses ``click``); names outside the
library's keyword list (``refresh_token``, ``x-api-key``, ``<password>``) hide their value only
when it is random enough or has a known format, and so does a URL with a password but no user
(``redis://:pw@host``); a random-looking hex string in quotes (a commit hash in JSON) is hidden.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING

from ._extras import install_hint

if TYPE_CHECKING:
    from detect_secrets.plugins.base import RegexBasedDetector
    from detect_secrets.plugins.high_entropy_strings import HighEntropyStringsPlugin

__all__ = ["INSTALL_HINT", "REDACTED", "excerpt", "redact", "require_redactor"]

REDACTED = "[REDACTED]"
INSTALL_HINT = f"capture_text=True needs the secret detector: {install_hint('redact')}"

# Characters either side of an excerpt that are scanned with it: a secret the excerpt's edge
# cuts is found whole if it is shorter than this (longer ones are keys and tokens the entropy
# detector finds in pieces). The window grows when redaction shrinks it too much.
_MARGIN = 400

# A private key from its BEGIN line (found by the library's plugin) to its END line, or to the
# end of the text when there is none (a PuTTY key has none).
_PEM_OPENING = re.compile(r"-{4,5} ?$")
_PEM_END = re.compile(r"-{4,5} ?END [A-Z0-9 ]*PRIVATE KEY(?: BLOCK)? ?-{4,5}")
# ``Authorization: <scheme> <credentials>``, or a ``Bearer`` token too long to be a word.
_CREDENTIAL = re.compile(
    r"(?i:authorization)[\"']?\s*[:=]\s*[\"']?(?i:bearer|basic|token|digest)\s+([A-Za-z0-9._~+/\-]+=*)"
    r"|\b(?i:bearer)\s+([A-Za-z0-9._~+/\-]{16,}=*)"
)
# The LLM providers' key formats, which the library has no plugin for: a key is a key by its
# prefix, even when its body is not random enough for the entropy detectors.
_PROVIDER_KEY = re.compile(
    r"\bsk-ant-[a-z]+\d*-[A-Za-z0-9_\-]{16,}"
    r"|\bsk-(?:proj|svcacct|admin|None)-[A-Za-z0-9_\-]{16,}"
    r"|\bAIza[0-9A-Za-z_\-]{35}"
)
# A secret named in prose, with the keyword plugin's names; see _looks_like_a_password.
_SAID = r"(?:{names})\s+(?:is|was|will be|has been|set to)\s+[\"'`]?(?P<value>\S+)"
_TRAILING = ".,;:!?)]}\"'`"
_QUOTES = "\"'`"
_COMPARISON = re.compile(r"[=!]=")
_NAME = re.compile(r"\w+")
_PATH = re.compile(r"[A-Za-z_$][\w$]*(?:\.[A-Za-z_$][\w$]*)+")  # settings.SECRET_KEY
_TYPE = re.compile(
    r"(?i:str|string|bytes|int|bool|boolean|any|none|null|undefined|secretstr|optional\[\w+\])"
)
# The key a value is given to, as in ``"tool_call_id": "call_...``.
_KEY = re.compile(r"([\w.$-]+)[\"']?\s*[:=]\s*[\"']?$")
_SPACE = re.compile(r"\s")
_CALL = re.compile(r"[\w.-]+[\[(]")  # how the library's indirect reference starts
_REFERENCE = 120  # characters of ``os.environ["..."]`` or ``vault.read(...)`` after a name

# (start, end) in the original text, (start, end) of its replacement in the redacted one.
Span = tuple[int, int, int, int]


@dataclass(frozen=True, slots=True)
class _Detector:
    """The library's plugins and expressions, built once."""

    names: re.Pattern[str]  # the keyword plugin's names, lower case (they are written so)
    after_name: tuple[tuple[re.Pattern[str], int], ...]  # keyword expressions that start at a name
    before_name: tuple[tuple[re.Pattern[str], int], ...]  # ``"value" == name``
    patterns: tuple[RegexBasedDetector, ...]
    private_key: RegexBasedDetector
    runs: tuple[tuple[HighEntropyStringsPlugin, re.Pattern[str]], ...]
    quoted: tuple[HighEntropyStringsPlugin, ...]
    said: re.Pattern[str]  # lower case


@lru_cache(maxsize=1)
def _detector() -> _Detector:
    from detect_secrets.core.plugins.util import get_mapping_from_secret_type_to_class
    from detect_secrets.plugins import keyword
    from detect_secrets.plugins.base import BasePlugin, RegexBasedDetector
    from detect_secrets.plugins.high_entropy_strings import Base64HighEntropyString, HexHighEntropyString
    from detect_secrets.plugins.private_key import PrivateKeyDetector

    shipped: Mapping[str, type[BasePlugin]] = get_mapping_from_secret_type_to_class()
    plugins = [cls() for cls in shipped.values()]
    tables = {**keyword.CONFIG_DENYLIST_REGEX_TO_GROUP, **keyword.QUOTES_REQUIRED_DENYLIST_REGEX_TO_GROUP}
    base64 = Base64HighEntropyString()
    return _Detector(
        names=re.compile(keyword.DENYLIST_REGEX),
        after_name=tuple((p, g) for p, g in tables.items() if p.pattern.startswith(keyword.DENYLIST_REGEX)),
        before_name=tuple(
            (p, g) for p, g in tables.items() if not p.pattern.startswith(keyword.DENYLIST_REGEX)
        ),
        # An IP address is not a credential; private keys are found across lines.
        patterns=tuple(
            p
            for p in plugins
            if isinstance(p, RegexBasedDetector)
            and type(p).__name__ not in ("IPPublicDetector", "PrivateKeyDetector")
        ),
        private_key=PrivateKeyDetector(),
        runs=((base64, _runs(base64)),),
        quoted=(HexHighEntropyString(),),
        said=re.compile(_SAID.format(names=keyword.DENYLIST_REGEX)),
    )


def _runs(plugin: HighEntropyStringsPlugin) -> re.Pattern[str]:
    """The library's expression for a value outside quotes (``non_quoted_string_regex``), for
    runs long enough to pass the entropy limit: ``n`` characters carry at most log2(n) bits
    each, and computing the entropy of shorter ones would be most of the time spent."""
    return re.compile(f"[{re.escape(plugin.charset)}]{{{int(2**plugin.entropy_limit) + 1},}}")


def require_redactor() -> None:
    """Raise ImportError naming the extra to install when the secret detector is missing."""
    try:
        _detector()
    except ImportError as exc:
        raise ImportError(INSTALL_HINT) from exc


def redact(text: str) -> str:
    """``text`` with every secret found replaced by ``[REDACTED]`` (the name of a ``name=value``
    pair is kept)."""
    return _redact(text)[0]


def excerpt(text: str, start: int, end: int, *, context: int, limit: int) -> str:
    """Characters ``start..end`` of ``text`` with up to ``context`` characters each side and at
    most ``limit`` in all, redacted.

    The text around the excerpt is redacted before it is cut, so a secret the cut would split
    cannot show its tail without the prefix that identifies it; a replacement the cut would split
    is left out rather than shown in part.
    """
    margin = _MARGIN
    while True:
        lo_window = max(0, start - context - margin)
        hi_window = min(len(text), min(end, start + limit) + context + margin)
        redacted, spans = _redact(text[lo_window:hi_window])
        first = _moved(start - lo_window, spans, end=False)
        last = _moved(min(end, hi_window) - lo_window, spans, end=True)
        lo = max(0, first - context)
        hi = min(len(redacted), last + context, lo + limit)
        for _, _, new_start, new_stop in spans:
            if new_start < lo < new_stop:
                lo = new_stop
            if new_start < hi < new_stop:
                hi = new_start
        # Near a window edge inside the text, a secret the window cuts could show: widen.
        near_start = lo_window > 0 and _origin(lo, spans) < margin // 2
        near_end = hi_window < len(text) and _origin(hi, spans) > hi_window - lo_window - margin // 2
        if not (near_start or near_end):
            return redacted[lo : max(lo, hi)]
        margin *= 4


def _moved(position: int, spans: list[Span], *, end: bool) -> int:
    """Where ``position`` of the original text lands in the redacted one (a position inside a
    replaced secret widens to the whole replacement)."""
    shift = 0
    for start, stop, new_start, new_stop in spans:
        if position <= start:
            break
        if position < stop:
            return new_stop if end else new_start
        shift = new_stop - stop
    return position + shift


def _origin(position: int, spans: list[Span]) -> int:
    """Where ``position`` of the redacted text came from in the original one."""
    shift = 0
    for start, stop, new_start, new_stop in spans:
        if position <= new_start:
            break
        if position < new_stop:
            return start
        shift = stop - new_stop
    return position + shift


def _redact(text: str) -> tuple[str, list[Span]]:
    """The redacted text, and each replacement as (start, end) in ``text`` and in the result."""
    view, origin = _unescaped(text)
    out: list[str] = []
    spans: list[Span] = []
    at = size = 0
    for view_start, view_end in _merged(sorted(_secrets(view))):
        start, end = origin[view_start], origin[view_end]
        out.append(text[at:start])
        size += start - at
        out.append(REDACTED)
        spans.append((start, end, size, size + len(REDACTED)))
        size += len(REDACTED)
        at = end
    out.append(text[at:])
    return "".join(out), spans


_ESCAPES = {'"': '"', "\\": "\\", "/": "/", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t"}
_ESCAPE = re.compile(r'\\(?:u[0-9a-fA-F]{4}|["\\/bfnrt])')


def _unescaped(text: str) -> tuple[str, list[int]]:
    """``text`` with JSON string escapes undone (``\\"`` is ``"``, ``\\n`` a new line), and
    where each character of the result starts in ``text`` (one entry more: the end)."""
    chars: list[str] = []
    origin: list[int] = []
    at = 0
    for m in _ESCAPE.finditer(text):
        chars.append(text[at : m.start()])
        origin.extend(range(at, m.start()))
        escape = m.group(0)
        chars.append(chr(int(escape[2:], 16)) if escape[1] == "u" else _ESCAPES[escape[1]])
        origin.append(m.start())
        at = m.end()
    chars.append(text[at:])
    origin.extend(range(at, len(text) + 1))
    return "".join(chars), origin


def _merged(spans: list[tuple[int, int]]) -> Iterator[tuple[int, int]]:
    """Sorted spans with those that overlap or touch joined."""
    current: tuple[int, int] | None = None
    for start, end in spans:
        if current is not None and start <= current[1]:
            current = (current[0], max(current[1], end))
            continue
        if current is not None:
            yield current
        current = (start, end)
    if current is not None:
        yield current


# -- finding ---------------------------------------------------------------------------------------
def _secrets(view: str) -> Iterator[tuple[int, int]]:
    """(start, end) of every secret in ``view``, overlapping ones included."""
    detector = _detector()
    yield from _private_keys(view, detector)
    at = 0
    for line in view.split("\n"):
        for start, end in _in_line(line, detector):
            if end > start:
                yield at + start, at + end
        at += len(line) + 1


def _private_keys(view: str, detector: _Detector) -> Iterator[tuple[int, int]]:
    for pattern in detector.private_key.denylist:
        for m in pattern.finditer(view):
            opening = _PEM_OPENING.search(view, max(0, m.start() - 6), m.start())
            closing = _PEM_END.search(view, m.end())
            yield (
                opening.start() if opening is not None else m.start(),
                closing.end() if closing is not None else len(view),
            )


def _in_line(line: str, detector: _Detector) -> Iterator[tuple[int, int]]:
    # The keyword plugin's expressions ignore case, which makes them slow: its names are found in
    # the lower-cased line, and its expressions tried only where one starts.
    lowered = line.lower()
    if len(lowered) != len(line):  # a few characters lower-case to two ("İ")
        lowered = "".join(c.lower() if len(c.lower()) == 1 else c for c in line)
    starts = [m.start() for m in detector.names.finditer(lowered)]
    yield from _keyword_values(line, starts, detector)
    yield from _said_values(line, lowered, starts, detector)
    for plugin in detector.patterns:
        for pattern in plugin.denylist:
            for m in pattern.finditer(line):
                if any(True for _ in plugin.analyze_string(m.group(0))):  # the plugin's own checks
                    yield _stripped(line, *m.span())
    for high_entropy, runs in detector.runs:
        for m in runs.finditer(line):
            if _random(high_entropy, line, *m.span()):
                yield m.span()
    for high_entropy in detector.quoted:
        for m in high_entropy.regex.finditer(line):
            if _random(high_entropy, line, *m.span(2)):
                yield m.span(2)
    if "sk-" in line or "AIza" in line:
        for m in _PROVIDER_KEY.finditer(line):
            yield m.span()
    if "bearer" in lowered or "authorization" in lowered:
        for m in _CREDENTIAL.finditer(line):
            yield m.span(1) if m.group(1) is not None else m.span(2)


def _said_values(
    line: str, lowered: str, starts: list[int], detector: _Detector
) -> Iterator[tuple[int, int]]:
    """Secrets named in prose, where they look like a password."""
    for at in starts:
        said = detector.said.match(lowered, at)
        if said is not None:
            start = said.start("value")
            value = line[start : said.end("value")].rstrip(_TRAILING)
            if _looks_like_a_password(value):
                yield start, start + len(value)


def _keyword_values(line: str, starts: list[int], detector: _Detector) -> Iterator[tuple[int, int]]:
    """Values of the keyword plugin's expressions, those that begin with a name tried only where
    one starts."""
    if not starts:
        return
    for pattern, group in detector.after_name:
        for at in starts:
            m = pattern.match(line, at)
            if m is not None and _is_value(line, m, group, detector):
                yield m.start(group), _value_end(line, m.start(group), m.end(group))
    for pattern, group in detector.before_name:
        for m in pattern.finditer(line):
            if _is_value(line, m, group, detector):
                yield m.span(group)


def _is_value(line: str, m: re.Match[str], group: int, detector: _Detector) -> bool:
    """The library's filters for a keyword's value, then, for an unquoted one, three for code:
    a comparison (``password == stored``), a type (``password: str``) and a variable
    (``api_key=api_key``, ``apiKey = process.env.API_KEY``) are not values."""
    from detect_secrets.filters import heuristic

    start, end = m.span(group)
    value = line[start:end]
    if heuristic.is_templated_secret(value) or heuristic.is_prefixed_with_dollar_sign(value):
        return False
    if start > 0 and line[start - 1] in _QUOTES:
        return True
    # The library tries this filter on the whole line, in time that grows with its square: here
    # only where a call or an index starts the value, on the text around it.
    if _CALL.match(line, start) and heuristic.is_indirect_reference(line[m.start() : start + _REFERENCE]):
        return False
    word = line[start : _value_end(line, start, end)].rstrip(_TRAILING + "(")
    name = _NAME.match(line, m.start())
    last = word.rsplit(".", 1)[-1]
    return not (
        _COMPARISON.search(line, m.start(), start) is not None
        or _TYPE.fullmatch(word) is not None
        or (name is not None and _squashed(last) == _squashed(name.group(0)))
        or (_PATH.fullmatch(word) is not None and detector.names.search(last.lower()) is not None)
    )


def _squashed(name: str) -> str:
    return name.lower().replace("_", "").replace("-", "")


def _value_end(line: str, start: int, end: int) -> int:
    """A quoted value ends at its quote; an unquoted one, which the keyword plugin runs to the end
    of the line (one ``name=value`` a line in a config file), at the first space."""
    if start > 0 and line[start - 1] in _QUOTES and line[end : end + 1] == line[start - 1]:
        return end
    space = _SPACE.search(line, start, end)
    return end if space is None else space.start()


def _stripped(line: str, start: int, end: int) -> tuple[int, int]:
    """A pattern plugin's match without the space or quote some of them take on each side."""
    while start < end and (line[start].isspace() or line[start] in _QUOTES):
        start += 1
    while end > start and (line[end - 1].isspace() or line[end - 1] in _QUOTES):
        end -= 1
    return start, end


def _random(plugin: HighEntropyStringsPlugin, line: str, start: int, end: int) -> bool:
    """Over the plugin's entropy limit and past the library's default filters for such values.
    Its filter for IDs looks for ``_id`` anywhere before the value in the line; a prompt's line
    can be a whole JSON document, so here it is given the value's own key."""
    from detect_secrets.filters import heuristic

    value = line[start:end]
    if not (
        plugin.calculate_shannon_entropy(value) > plugin.entropy_limit
        and not heuristic.is_sequential_string(value)
        and not heuristic.is_potential_uuid(value)
        and not heuristic.is_templated_secret(value)
        and not heuristic.is_not_alphanumeric_string(value)
    ):
        return False
    key = _KEY.search(line, max(0, start - 64), start)
    return key is None or not heuristic.is_likely_id_string(value, f"{key.group(1)}: {value}", plugin)


def _looks_like_a_password(value: str) -> bool:
    """A digit, a symbol or an inner capital: ``Tr0ub4dor&3``, not ``required``."""
    return any(c.isdigit() or not c.isalnum() for c in value) or any(c.isupper() for c in value[1:])
