"""Observing boto3 results in place: botocore ``EventStream`` hooks and ``StreamingBody``
re-wraps, so the caller iterates or reads the very content the SDK returned.

:func:`cachebench.providers.bedrock.inspect_result` decides which applies to a result.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from typing import Any

from ._stream import Recorder, ended_when_collected

__all__ = ["FailedRead", "failed_body", "hook_event_stream", "is_body", "is_event_stream", "new_body"]


def is_event_stream(obj: Any) -> bool:
    """A botocore ``EventStream`` (or a test double of one), told by the parts we hook."""
    return hasattr(obj, "_event_generator") and hasattr(obj, "_parse_event")


def is_body(obj: Any) -> bool:
    return callable(getattr(obj, "read", None)) and not is_event_stream(obj)


def new_body(data: bytes) -> Any:
    """A ``StreamingBody`` over bytes already read: the caller reads identical content."""
    from botocore.response import StreamingBody

    return StreamingBody(io.BytesIO(data), len(data))


class FailedRead:
    """Stands in for a body whose read failed: the caller's own read raises the same error."""

    def __init__(self, error: Exception) -> None:
        self._error = error

    def readable(self) -> bool:
        return True

    def read(self, amt: int | None = None) -> bytes:
        raise self._error

    def close(self) -> None:
        return None


def failed_body(error: Exception) -> Any:
    """A ``StreamingBody`` whose read raises ``error``, as the body it replaces did."""
    from botocore.response import StreamingBody

    return StreamingBody(FailedRead(error), None)


def hook_event_stream(stream: Any, rec: Recorder) -> Any:
    """Observe a botocore ``EventStream`` in place; the caller iterates the same object.

    ``EventStream.__iter__`` pulls raw messages from ``_event_generator`` and parses each with
    ``_parse_event`` (which raises ``EventStreamError`` for an exception event). We replace
    both instance attributes: the parser feeds each parsed event to the recorder, and the
    raw generator finalises the call when it is exhausted, fails, or is closed (``break``
    and garbage collection close it); ``close()`` finalises too. :class:`Recorder` makes
    that exactly once.
    """
    raw_events: Iterator[Any] = stream._event_generator
    parse = stream._parse_event
    close = stream.close

    def parse_event(message: Any) -> Any:
        try:
            event = parse(message)
        except Exception as exc:
            rec.end(exc)
            raise
        if event:
            rec.item(event)
        return event

    def until_end() -> Iterator[Any]:
        error: BaseException | None = None
        collected = False
        try:
            yield from raw_events
        except GeneratorExit:
            collected = True  # dropped after a ``break``: see Recorder.end
            raise
        except BaseException as exc:
            error = exc
            raise
        finally:
            rec.end(error, collected=collected)

    def close_stream() -> None:
        try:
            close()
        finally:
            rec.end()

    stream._event_generator = until_end()
    stream._parse_event = parse_event
    stream.close = close_stream
    rec.start()  # boto3 returns the stream once the response headers arrived
    return ended_when_collected(stream, rec)
