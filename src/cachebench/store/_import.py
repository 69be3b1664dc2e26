"""``store.import_records``: saved calls into a store, through the same analysis as live calls.

The calls are replayed in timestamp order through a tracker that writes to the store (so
their miss causes, diffs and incidents are what live tracking would have found). A call
without a time of its own (an Anthropic batch's) takes the import's time, in file order. A
batch API's call is priced at the provider's batch price.
No retention runs during an import: calls older than the store keeps raw calls stay until the
next pass (a live tracker's, or ``cachebench prune``), which keeps only their hourly roll-up.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..importing import SavedCall, Skipped
    from ._sql import SQLStore


@dataclass(frozen=True)
class Imported:
    """What an import did: calls recorded, lines skipped (with their reasons), and the time
    range of the calls."""

    calls: int
    skipped: list[Skipped] = field(default_factory=list)
    first_at: float | None = None
    last_at: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "calls": self.calls,
            "skipped": [
                {"source": s.source, "line": s.line, "kind": s.kind, "reason": s.reason} for s in self.skipped
            ],
            "first_at": self.first_at,
            "last_at": self.last_at,
        }


Source = str | os.PathLike[str]


def import_records(
    store: SQLStore,
    sources: Source | Sequence[Source] | Iterable[SavedCall],
    *,
    flow: str | None = None,
    provider: str | None = None,
    now: float | None = None,
    force: bool = False,
) -> Imported:
    from ..importing import ImportFileError, SavedCall, Skipped, read_saved
    from ..tracker import CacheTracker

    files: list[str] = []
    if isinstance(sources, (str, os.PathLike)):
        files = [os.fspath(sources)]
        items: Iterable[SavedCall | Skipped] = read_saved(files)
    else:
        listed: list[Any] = list(sources)
        paths = all(isinstance(s, (str, os.PathLike)) for s in listed)
        files = [os.fspath(s) for s in listed] if paths else []
        items = read_saved(listed) if paths else listed
    digests = {path: _digest(path) for path in files}
    for path, digest in digests.items():
        seen = None if force else store.imported(digest)
        if seen is not None:
            when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(seen["imported_at"]))
            raise ImportFileError(
                f"{path}: this store imported the same file ({seen['source']}) on {when}, "
                f"{seen['calls']} calls; importing it again would count them twice (--force to do it anyway)"
            )
    at = time.time() if now is None else now
    calls: list[SavedCall] = []
    skipped: list[Skipped] = []
    for item in items:
        if isinstance(item, Skipped):
            skipped.append(item)
        elif isinstance(item, SavedCall):
            calls.append(item)
        else:
            raise TypeError(f"import_records takes file paths or SavedCall items, got {type(item).__name__}")
    calls.sort(key=lambda c: at if c.timestamp is None else c.timestamp)  # stable: file order kept
    replay_at = [at]

    def clock() -> float:
        return replay_at[0]

    tracker = CacheTracker(
        store=store, clock=clock, on_miss_alert=lambda m: None, on_regression=lambda r: None
    )
    engine = tracker._engine
    if engine.writer is not None:
        engine.writer.retention = False  # old calls are imported whole; retention runs later
    recorded: dict[str, int] = {}  # calls recorded, per source
    first = last = None
    try:
        for c in calls:
            ts = at if c.timestamp is None else c.timestamp
            # The line's own provider, else ``provider``, else the one its response tells (a
            # Bedrock InvokeModel response has Anthropic's shape: only ``provider`` tells them apart).
            chosen = c.provider or provider
            try:
                adapter = tracker._adapter(chosen, response=c.response)
            except ValueError as exc:
                skipped.append(Skipped(c.source, c.line, "unsupported", str(exc)))
                continue
            replay_at[0] = ts
            engine.record(
                adapter,
                c.response,
                c.request,
                c.flow or flow or _default_flow(adapter, c),
                timestamp=ts,
                elapsed_ms=c.elapsed_ms,
                wait=False,
                batch=c.custom_id is not None,  # a batch API's call: its batch price
            )
            recorded[c.source] = recorded.get(c.source, 0) + 1
            first = ts if first is None else first
            last = ts
        tracker.flush()
    finally:
        tracker.close()
    for path, digest in digests.items():
        store.note_import(digest, path, recorded.get(path, 0), at)
    skipped.sort(key=lambda s: (s.source, s.line))
    return Imported(sum(recorded.values()), skipped, first, last)


def _default_flow(adapter: Any, c: Any) -> str:
    """The flow of an imported call that names none, and was given none: ``provider/model``,
    as offline explain names it (the model from the request, else the response)."""
    model = adapter.request_model(c.request)
    if model is None:
        try:
            model = adapter.recorded_usage(c.response, c.request).model
        except Exception:  # (a response the adapter cannot read: its model is unknown)
            model = None
    return f"{adapter.NAME}/{model or 'unknown'}"


def _digest(path: str) -> str:
    """The SHA-256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
