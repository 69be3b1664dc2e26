"""Layer prints: what the diagnosis keeps of a cached layer instead of its text, and where and
how two prints differ.

A *layer* is the run of blocks between two breakpoints. Its print holds, per block, digests
only (the block's bytes too with ``capture_text=True``):

* ``digest``: of its canonical bytes (sorted keys, as ``prefix_id`` hashes them), and
  ``order_digest``: of its bytes in the caller's own key order (providers cache the bytes
  they render, so a re-ordered schema misses although ``digest`` is unchanged);
* ``head``/``tail``: digests of the chunks of the canonical bytes counted from the start and
  from the end (64 bytes, doubled for large blocks so that at most ``MAX_CHUNKS`` cover one),
  which locate the first and last changed chunk of a block;
* ``masked``: the canonical bytes without digits and hex letters: equal for two renderings
  that differ only in numbers, dates, times, uuids and hex ids (the changed range then names
  the value, :func:`cachebench.diagnose.classify.volatile_in`);
* ``content``: the block as content (:func:`cachebench.diagnose.classify.normalized_digest`
  for a block that carries JSON inside its text, the bytes without spaces and tabs
  otherwise): equal for renderings that differ only in key order or indentation.

A block's features are computed once per distinct block (:class:`Printer` keeps them by
digest within a byte budget), so a layer that changes in one block costs that block's.
"""

from __future__ import annotations

from array import array
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import xxhash

from ..fingerprint import canonical, ordered
from ..redact import excerpt
from ..types import ChangeKind, PrefixDiff, Prompt, ValueType
from .classify import normalized_digest, reordered, volatile_in
from .thresholds import FEATURES_BUDGET, LOCALIZED_SHARE, NORMALIZE_MAX_BYTES

__all__ = [
    "BlockPrint",
    "Change",
    "Features",
    "LayerPrint",
    "Printer",
    "block_bytes",
    "compare",
    "nearest",
    "print_size",
]

CHUNK = 64
MAX_CHUNKS = 256
_CONTEXT = 80  # characters of context on each side of a difference in an excerpt
_EXCERPT_MAX = 300  # characters in one excerpt: a re-ordered tool makes the range the whole block
_VALUE_REACH = 256  # bytes either side of a changed range decoded to name the value in it
_digest = xxhash.xxh3_64_intdigest
_VOLATILE_BYTES = b"0123456789abcdefABCDEF"
_JSON_IN_TEXT = (b'{\\"', b'{ \\"', b"{\\n", b'[\\"', b"[{", b"[[")  # (in the canonical JSON escapes)


@dataclass(frozen=True, slots=True)
class Features:
    """What a print keeps of one block (see the module's docstring); no text unless ``text``."""

    size: int
    digest: int
    order_digest: int
    chunk: int
    head: bytes  # packed chunk digests (see _chunks)
    tail: bytes
    masked: int
    content: int
    text: bytes | None = None


class BlockPrint(NamedTuple):
    section: str
    index: int  # type: ignore[assignment]  # within its section (shadows tuple.index, unused)
    position: int  # in the prompt
    features: Features


LayerPrint = tuple[BlockPrint, ...]


def chunk_size(n: int) -> int:
    """The chunk size for a block of ``n`` bytes: ``CHUNK``, doubled until ``MAX_CHUNKS`` chunks
    cover the block (a change is located to a chunk; two renderings of a block of about the same
    size get the same chunk size)."""
    size = CHUNK
    while size * MAX_CHUNKS < n:
        size *= 2
    return size


def _chunks(data: bytes, size: int) -> tuple[bytes, bytes]:
    """The chunk digests from the start and from the end, each packed as 8-byte little-endian
    ints (compared with :func:`_equal_run`)."""
    n = len(data)
    view = memoryview(data)  # (slices without copies)
    head = array("Q", [_digest(view[i : i + size]) for i in range(0, n, size)])
    tail = array("Q", [_digest(view[n - i - size if n - i > size else 0 : n - i]) for i in range(0, n, size)])
    return head.tobytes(), tail.tobytes()


_SCAN_LIMIT = 16  # occurrences of a mark's first byte looked at one by one before a full search


def _carries_json(data: bytes) -> bool:
    """Whether ``data`` holds one of the marks of JSON inside a string (``_JSON_IN_TEXT``).

    The same answer as searching for each mark, sooner: a one-byte search (memchr) finds each
    ``[`` and each backslash, and the bytes around them are looked at; prose has few of either.
    Past ``_SCAN_LIMIT`` of them (JSON-heavy blocks), the marks are searched for whole."""
    find = data.find
    i = find(b"[")
    seen = 0
    while i >= 0:
        after = data[i + 1 : i + 2]
        if after == b"{" or after == b"[":
            return True
        seen += 1
        if seen > _SCAN_LIMIT:
            return b"[{" in data or b"[[" in data or _escaped_mark(data)
        i = find(b"[", i + 1)
    return _escaped_mark(data)


def _escaped_mark(data: bytes) -> bool:
    """Whether ``data`` holds ``{\\"``, ``{ \\"``, ``{\\n`` or ``[\\"`` (each has a backslash)."""
    find = data.find
    i = find(b"\\")
    seen = 0
    while i >= 0:
        after = data[i + 1 : i + 2]
        before = data[i - 1 : i] if i else b""
        if (after == b'"' and (before == b"[" or before == b"{" or data[i - 2 : i] == b"{ ")) or (
            after == b"n" and before == b"{"
        ):
            return True
        seen += 1
        if seen > _SCAN_LIMIT:
            return any(mark in data for mark in _JSON_IN_TEXT[:4])
        i = find(b"\\", i + 1)
    return False


def _content(payload: Any, data: bytes) -> int:
    """The block as content: equal for renderings that differ in key order (of the block's
    own dicts: the canonical bytes sort them; of JSON inside its text, up to
    ``NORMALIZE_MAX_BYTES``) or in spaces and tabs. (Line breaks are content, except inside
    JSON.)"""
    if len(data) <= NORMALIZE_MAX_BYTES and _carries_json(data):
        return normalized_digest(payload)  # JSON inside a string: parsed, keys sorted, whitespace collapsed
    return _digest(data.translate(None, b" \t"))


def _features(data: bytes, digest: int, order_digest: int, payload: Any, keep_text: bool) -> Features:
    chunk = chunk_size(len(data))
    head, tail = _chunks(data, chunk)
    return Features(
        len(data),
        digest,
        order_digest,
        chunk,
        head,
        tail,
        _digest(data.translate(None, _VOLATILE_BYTES)),
        _content(payload, data),
        data if keep_text else None,
    )


def feature_size(f: Features) -> int:
    """Bytes a block's features hold, with their entry in the printer's cache (measured with
    tracemalloc: the object, its ints, the packed digests, the key)."""
    return 480 + len(f.head) + len(f.tail) + (len(f.text) if f.text else 0)


def print_size(layer: LayerPrint) -> int:
    """Bytes a layer print holds beyond its blocks' features (kept by the printer): the tuple,
    a named tuple per block and its entry in the detector's store."""
    return 160 + 140 * len(layer)


class Printer:
    """Makes layer prints, computing each distinct block's features once (least recently used
    dropped beyond ``budget`` bytes)."""

    def __init__(self, keep_text: bool, budget: int = FEATURES_BUDGET) -> None:
        self.keep_text = keep_text
        self.budget = budget
        self._features: OrderedDict[int, Features] = OrderedDict()
        self._bytes = 0

    def layer(self, prompt: Prompt, start: int, stop: int) -> LayerPrint:
        """The print of blocks ``start..stop-1`` of ``prompt``."""
        pairs = prompt.pairs
        start = max(start, 0)
        stop = min(stop, len(pairs))
        seen: dict[str, int] = {}  # blocks of each section before ``position``
        for section, _ in pairs[:start]:
            seen[section] = seen.get(section, 0) + 1
        out: list[BlockPrint] = []
        for position in range(start, stop):
            section, payload = pairs[position]
            index = seen.get(section, 0)
            seen[section] = index + 1
            out.append(BlockPrint(section, index, position, self._block(section, payload)))
        return tuple(out)

    def _block(self, section: str, payload: Any) -> Features:
        # Kept by the digest of the block's bytes in the caller's key order: the same bytes are
        # the same block (its canonical bytes follow from them), and the same content in another
        # key order is another rendering, with features of its own. The canonical bytes are made
        # only for a block not seen before.
        key = _digest(ordered((section, payload)))
        cache = self._features
        found = cache.get(key)
        if found is not None:
            cache.move_to_end(key)
            return found
        data = canonical((section, payload))
        made = cache[key] = _features(data, _digest(data), key, payload, self.keep_text)
        self._bytes += feature_size(made)
        while self._bytes > self.budget and len(cache) > 1:
            _, dropped = cache.popitem(last=False)
            self._bytes -= feature_size(dropped)
        return made


def _digests(layer: LayerPrint) -> list[int]:
    return [b.features.digest for b in layer]


def _same_run(old: list[int], new: list[int]) -> int:
    """How many digests from the start the two lists share."""
    same = 0
    for o, b in zip(old, new, strict=False):
        if o != b:
            break
        same += 1
    return same


def nearest(candidates: Sequence[LayerPrint], new: LayerPrint) -> LayerPrint:
    """The earlier print most like ``new``: the most blocks equal in order from the start;
    among equals, the most blocks in common; then the one whose first differing block shares
    the most chunks at both ends; then the most recent (the candidates come newest first).
    Each measure is taken only among the ties of the one before."""
    new_digests = _digests(new)
    runs = [(c, _digests(c)) for c in candidates]
    same = [_same_run(d, new_digests) for _, d in runs]
    top = max(same)
    tied = [run for run, s in zip(runs, same, strict=True) if s == top]
    if len(tied) > 1:
        kept = set(new_digests)
        common = [len(kept.intersection(d)) for _, d in tied]
        best = max(common)
        tied = [run for run, n in zip(tied, common, strict=True) if n == best]
    if len(tied) > 1 and top < len(new):
        nf = new[top].features
        ends = [
            _equal_run(c[top].features.head, nf.head) + _equal_run(c[top].features.tail, nf.tail)
            if top < len(c) and c[top].features.chunk == nf.chunk
            else 0
            for c, _ in tied
        ]
        best = max(ends)
        tied = [run for run, n in zip(tied, ends, strict=True) if n == best]
    return tied[0][0]


def _equal_run(a: bytes, b: bytes) -> int:
    """How many leading chunk digests two packed runs (:func:`_chunks`) share: the lowest set
    bit of their XOR, read as little-endian ints, is in the first digest that differs."""
    if a[:8] != b[:8]:
        return 0  # (the first digests differ: a change near this end)
    n = min(len(a), len(b))
    x = int.from_bytes(a[:n], "little") ^ int.from_bytes(b[:n], "little")
    if not x:
        return n // 8
    return ((x & -x).bit_length() - 1) // 64


class Change(NamedTuple):
    """How a layer differs from an earlier print of it.

    ``diff`` locates it (its ``kind``: ``volatile``, ``reordered``, ``serialization`` or
    ``content``); ``structural`` when the first difference is a block added or removed (a new
    turn, a trimmed history: no edit of the earlier content); ``localized`` when the changed
    range is a small part of the block (an edit, not other content)."""

    diff: PrefixDiff
    structural: bool
    localized: bool

    @property
    def avoidable_kind(self) -> bool:
        """A change that keeps recurring unless the prompt is built differently (a plain
        number may be a counter or another customer's id: not by itself)."""
        kind = self.diff.kind
        return kind in ("reordered", "serialization") or (
            kind == "volatile" and self.diff.value_type != "number"
        )


def compare(old: LayerPrint, new: LayerPrint, new_bytes: Any = None) -> Change | None:
    """Where and how ``new`` differs from ``old``; None when they are the same rendering.

    ``new_bytes(position)`` gives the canonical bytes of the current prompt's block at a
    position (read while the call is observed, kept nowhere): it names a volatile value and
    narrows the range to it. Without it (or without the text) no value type is named."""
    old_digests = [b.features.digest for b in old]
    new_digests = [b.features.digest for b in new]
    if reordered(old_digests, new_digests):
        # The same blocks in another order (a re-ordered tool list): the first moved block.
        i = next(i for i, (a, b) in enumerate(zip(old_digests, new_digests, strict=True)) if a != b)
        o, b = old[i], new[i]
        before = _excerpt(o.features.text, 0, o.features.size)
        after = _excerpt(b.features.text, 0, b.features.size)
        return Change(_diff(b, 0, b.features.size, "reordered", before=before, after=after), False, True)
    for i in range(max(len(old), len(new))):
        if i >= len(new):
            o = old[i]
            return Change(
                _diff(o, 0, 0, "content", before=_excerpt(o.features.text, 0, o.features.size)), True, False
            )
        b = new[i]
        if i >= len(old):
            return Change(
                _diff(b, 0, b.features.size, "content", after=_excerpt(b.features.text, 0, b.features.size)),
                True,
                False,
            )
        o = old[i]
        of, nf = o.features, b.features
        if of.digest == nf.digest and o.section == b.section:
            if of.order_digest != nf.order_digest:  # (the text kept is the sorted form: no excerpt)
                return Change(_diff(b, 0, nf.size, "serialization"), False, True)
            continue
        if o.section != b.section:
            return Change(_diff(b, 0, nf.size, "content"), True, False)
        if _reordered_section(old, new, b.section):
            # The section's blocks in another order, while another section changed too (a
            # re-ordered tool list and a new timestamp): the re-ordering comes first.
            return Change(
                _diff(
                    b,
                    0,
                    nf.size,
                    "reordered",
                    before=_excerpt(of.text, 0, of.size),
                    after=_excerpt(nf.text, 0, nf.size),
                ),
                False,
                True,
            )
        return _block_change(o, b, new_bytes)
    return None


def _reordered_section(old: LayerPrint, new: LayerPrint, section: str) -> bool:
    """Whether ``new`` holds ``old``'s blocks of ``section`` in another order."""
    return reordered(
        [x.features.digest for x in old if x.section == section],
        [x.features.digest for x in new if x.section == section],
    )


def _block_change(o: BlockPrint, b: BlockPrint, new_bytes: Any) -> Change:
    of, nf = o.features, b.features
    chunk = nf.chunk
    if of.chunk == chunk:
        j = _equal_run(of.head, nf.head)
        k = _equal_run(of.tail, nf.tail)
    else:  # sizes either side of a chunk-size step: not aligned, the whole block
        j = k = 0
    start = min(j * chunk, nf.size)
    end = max(nf.size - k * chunk, start)
    old_end = max(of.size - k * chunk, start)
    if end == start and nf.size > start:
        end = min(nf.size, start + chunk)  # an edit smaller than a chunk near both ends
    before = _excerpt(of.text, start, old_end)
    if of.content == nf.content:
        return Change(
            _diff(b, start, end, "serialization", before=before, after=_excerpt(nf.text, start, end)),
            False,
            True,
        )
    localized = end - start <= max(chunk * 2, LOCALIZED_SHARE * nf.size)
    if of.masked == nf.masked and new_bytes is not None:
        data = new_bytes(b.position)
        if data is not None and len(data) == nf.size:
            # Only the bytes around the change are decoded (a block may be hundreds of KB).
            base = max(0, start - _VALUE_REACH)
            window = data[base : end + _VALUE_REACH].decode("utf-8", "ignore")
            first = len(data[base:start].decode("utf-8", "ignore"))
            last = len(data[base:end].decode("utf-8", "ignore"))
            value = volatile_in(window, first, last)
            if value is not None:
                value_type, lo, hi = value
                lo_b = base + len(window[:lo].encode())
                hi_b = lo_b + len(window[lo:hi].encode())
                after = _excerpt(nf.text, lo_b, hi_b)
                return Change(
                    _diff(b, lo_b, hi_b, "volatile", value_type=value_type, before=before, after=after),
                    False,
                    True,
                )
    return Change(
        _diff(b, start, end, "content", before=before, after=_excerpt(nf.text, start, end)), False, localized
    )


def _diff(
    b: BlockPrint,
    start: int,
    end: int,
    kind: ChangeKind,
    *,
    value_type: ValueType | None = None,
    before: str | None = None,
    after: str | None = None,
) -> PrefixDiff:
    return PrefixDiff(b.section, b.index, b.position, start, end, kind, before, after, value_type)


def _excerpt(data: bytes | None, start: int, end: int) -> str | None:
    """Bytes ``start..end`` of a block's canonical bytes with context, redacted (see
    :func:`cachebench.redact.excerpt`): at most ``_CONTEXT`` characters each side and
    ``_EXCERPT_MAX`` in all."""
    if data is None:
        return None
    # A byte offset inside a multi-byte character counts up to the character before it.
    first = len(data[:start].decode("utf-8", "ignore"))
    last = len(data[:end].decode("utf-8", "ignore"))
    return excerpt(data.decode("utf-8", "replace"), first, last, context=_CONTEXT, limit=_EXCERPT_MAX)


def block_bytes(prompt: Prompt | None) -> Any:
    """A function giving the canonical bytes of ``prompt``'s block at a position (or None)."""
    if prompt is None:
        return None
    pairs = prompt.pairs

    def at(position: int) -> bytes | None:
        return canonical(pairs[position]) if 0 <= position < len(pairs) else None

    return at
