"""Observing what an SDK call returned, streams included, without changing it.

A stream is finalised exactly once (:class:`Recorder`): when it is exhausted, closed, left
with ``break`` and garbage-collected, or fails mid-stream (recorded with the error, which
then reaches the caller unchanged).

Where the hooks sit:

* Stainless SDKs (anthropic, openai): every stream, whichever helper made it
  (``create(stream=True)``, ``messages.stream()``, ``chat.completions.stream()``,
  ``responses.stream()``, ``with_raw_response``), iterates ``Stream._iterator``. We replace
  that one instance attribute with an observing generator over the original and wrap the
  instance's ``close``; the object, its type and its other attributes stay the caller's.
* Stream managers (``messages.stream()`` when the user wrapped that method themselves):
  a thin proxy whose ``__enter__`` hooks the raw stream of what the real manager returns.
* Plain generators (google-genai): an observing generator in their place.
"""

from __future__ import annotations

import contextlib
import inspect
import time
import weakref
from collections.abc import AsyncIterator, Iterator
from typing import TYPE_CHECKING, Any

from .. import engine as _engine
from ..types import UNKNOWN_USAGE, Usage
from ._base import Accumulator, Adapter

if TYPE_CHECKING:
    from ..engine import CallContext

__all__ = ["Recorder", "ended_when_collected", "observe_result"]


class Recorder:
    """Feeds one stream's events to an accumulator and finalises the call exactly once."""

    __slots__ = ("_acc", "_call", "_done", "_started")

    def __init__(self, call: CallContext, acc: Accumulator) -> None:
        self._call = call
        self._acc = acc
        self._done = False
        self._started = False

    def start(self) -> None:
        """The provider's response has begun (first event, or the HTTP headers of a stream)."""
        if not self._started:
            self._started = True
            self._call.response_started()

    def item(self, event: Any) -> None:
        if not self._started:
            self.start()
        try:
            self._acc.add(event)
        except Exception as exc:
            self._call.tracker_failed("stream event", exc)

    def end(self, error: BaseException | None = None, *, collected: bool = False) -> None:
        """Finalise the call once. ``collected``: called by the garbage collector (a finalizer,
        or a generator closed because it was dropped), which may run at any allocation,
        including inside a lock the interrupted code holds: then the ending is only queued
        (:meth:`~cachebench.engine.Engine.later`, which takes no lock) and done on the
        consumer thread."""
        if self._done:
            return
        if collected:
            self._call.engine.later(self.end, error)
            return
        self._done = True
        try:
            usage: Usage = self._acc.usage()
            if error is None:
                # Failures a stream reports in-band (OpenAI Responses ``response.failed``).
                in_band = getattr(self._acc, "error", None)
                error = in_band() if callable(in_band) else None
        except Exception as exc:
            self._call.tracker_failed("stream usage", exc)
            usage = UNKNOWN_USAGE
        self._call.finish(usage, error)


def _end_collected(rec: Recorder) -> None:
    rec.end(collected=True)


def ended_when_collected(obj: Any, rec: Recorder) -> Any:
    """Finalise ``rec`` when ``obj`` is garbage-collected, even if it was never iterated (a
    generator that never started never runs its ``finally``). Returns ``obj``."""
    try:
        weakref.finalize(obj, _end_collected, rec).atexit = False
    except TypeError:  # not weak-referenceable: it is finalised by iteration or close only
        pass
    return obj


def observe_iterator(it: Iterator[Any], rec: Recorder) -> Iterator[Any]:
    error: BaseException | None = None
    collected = False
    try:
        for event in it:
            rec.item(event)
            yield event
    except GeneratorExit:
        collected = True  # closed early: dropped after a ``break`` (or an explicit close())
        raise
    except BaseException as exc:
        error = exc
        raise
    finally:
        # Closed early: close the SDK's own generator as its GC would.
        close = getattr(it, "close", None)
        if close is not None:
            with contextlib.suppress(Exception):
                close()
        rec.end(error, collected=collected)


async def observe_async_iterator(it: AsyncIterator[Any], rec: Recorder) -> AsyncIterator[Any]:
    error: BaseException | None = None
    collected = False
    try:
        async for event in it:
            rec.item(event)
            yield event
    except GeneratorExit:
        collected = True
        raise
    except BaseException as exc:
        error = exc
        raise
    finally:
        aclose = getattr(it, "aclose", None)
        if aclose is not None:
            with contextlib.suppress(Exception):
                await aclose()
        rec.end(error, collected=collected)


def _is_stainless_stream(obj: Any) -> bool:
    return hasattr(type(obj), "__stream__") and hasattr(obj, "response")


def hook_stainless_stream(stream: Any, rec: Recorder) -> Any:
    """Observe a Stainless ``Stream``/``AsyncStream`` in place (see module docstring)."""
    inner = stream._iterator  # a cached_property in newer SDKs, a plain attribute in older ones
    orig_close = stream.close
    # The SDK builds the Stream once the response headers arrived: the provider has started
    # answering, so the entry it writes is readable (and held twins may go), read or not.
    rec.start()
    ended_when_collected(stream, rec)
    if inspect.isasyncgen(inner) or hasattr(inner, "__anext__"):
        stream.__dict__["_iterator"] = observe_async_iterator(inner, rec)

        async def aclose() -> None:
            try:
                await orig_close()
            finally:
                rec.end()

        stream.close = aclose
    else:
        stream.__dict__["_iterator"] = observe_iterator(inner, rec)

        def close() -> None:
            try:
                orig_close()
            finally:
                rec.end()

        stream.close = close
    return stream


def _hook_helper_stream(helper: Any, rec: Recorder) -> Any:
    """A helper stream (MessageStream, ChatCompletionStream, ...) iterates ``_raw_stream``."""
    raw = getattr(helper, "_raw_stream", None)
    if raw is not None and _is_stainless_stream(raw):
        hook_stainless_stream(raw, rec)
    else:
        rec.end()
    return helper


class StreamManagerProxy:
    """Stands in for an SDK stream manager; what ``with`` yields is the SDK's own stream."""

    def __init__(self, manager: Any, rec: Recorder) -> None:
        self._manager = manager
        self._rec = rec
        ended_when_collected(self, rec)  # a manager never entered sent nothing: end it when dropped

    def __enter__(self) -> Any:
        try:
            helper = self._manager.__enter__()
        except BaseException as exc:
            self._rec.end(exc)
            raise
        return _hook_helper_stream(helper, self._rec)

    def __exit__(self, *exc: Any) -> Any:
        try:
            return self._manager.__exit__(*exc)
        finally:
            self._rec.end(exc[1] if len(exc) > 1 and isinstance(exc[1], Exception) else None)

    async def __aenter__(self) -> Any:
        try:
            helper = await self._manager.__aenter__()
        except BaseException as exc:
            self._rec.end(exc)
            raise
        return _hook_helper_stream(helper, self._rec)

    async def __aexit__(self, *exc: Any) -> Any:
        try:
            return await self._manager.__aexit__(*exc)
        finally:
            self._rec.end(exc[1] if len(exc) > 1 and isinstance(exc[1], Exception) else None)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._manager, name)


class ResponseManagerProxy:
    """Stands in for ``with_streaming_response``'s ``ResponseContextManager``: the request is
    sent only when it is entered, so the call is observed there; what ``with`` yields is the
    SDK's own response, whose ``parse()`` is observed. Left without ``parse()`` (the raw
    bytes read by hand), the call is recorded at exit with its usage unknown."""

    def __init__(self, manager: Any, call: CallContext) -> None:
        self._manager = manager
        self._call = call
        # A manager dropped without being entered sent nothing: end its call when it is
        # collected, so no policy hold or in-flight write is left behind.
        weakref.finalize(self, _end_unentered, call).atexit = False

    def _entered(self, response: Any) -> Any:
        return self._call.guarded(_observe_raw_response, response, self._call) or response

    def _exited(self, exc: tuple[Any, ...]) -> None:
        call = self._call
        if not call.finished and not call.observing:
            error = exc[1] if len(exc) > 1 and isinstance(exc[1], Exception) else None
            call.finish(UNKNOWN_USAGE, error)

    def __enter__(self) -> Any:
        token = _engine.observing.set(self._call)
        try:
            response = self._manager.__enter__()
        except BaseException as exc:
            self._call.finish(UNKNOWN_USAGE, exc)
            raise
        finally:
            _engine.observing.reset(token)
        return self._entered(response)

    def __exit__(self, *exc: Any) -> Any:
        try:
            return self._manager.__exit__(*exc)
        finally:
            self._exited(exc)

    async def __aenter__(self) -> Any:
        token = _engine.observing.set(self._call)
        try:
            response = await self._manager.__aenter__()
        except BaseException as exc:
            self._call.finish(UNKNOWN_USAGE, exc)
            raise
        finally:
            _engine.observing.reset(token)
        return self._entered(response)

    async def __aexit__(self, *exc: Any) -> Any:
        try:
            return await self._manager.__aexit__(*exc)
        finally:
            self._exited(exc)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._manager, name)


def _end_unentered(call: CallContext) -> None:
    call.engine.later(_finish_if_open, call)  # a finalizer: only queue


def _finish_if_open(call: CallContext) -> None:
    if not call.finished and not call.observing:
        call.finish(UNKNOWN_USAGE, None)


_RESPONSE_MANAGERS = ("ResponseContextManager", "AsyncResponseContextManager")


def _observe_raw_response(raw: Any, call: CallContext) -> Any:
    """``with_raw_response`` / ``with_streaming_response``: observe what ``parse()`` returns."""
    http = getattr(raw, "http_response", None)
    body_read = http is not None and getattr(http, "_content", None) is not None
    if body_read and not call.stream:
        # The body is in memory and parse() memoises, so parsing here costs the caller nothing.
        observe_result(raw.parse(), call)
        return raw
    orig_parse = raw.parse
    if inspect.iscoroutinefunction(orig_parse):

        async def aparse(*args: Any, **kwargs: Any) -> Any:
            parsed = await orig_parse(*args, **kwargs)
            if not kwargs and not args:
                call.guarded(observe_result, parsed, call)
            return parsed

        raw.parse = aparse
    else:

        def parse(*args: Any, **kwargs: Any) -> Any:
            parsed = orig_parse(*args, **kwargs)
            if not kwargs and not args:
                call.guarded(observe_result, parsed, call)
            return parsed

        raw.parse = parse
    return raw


# (adapter, type) -> True when results of that type are finished responses (no stream, raw
# response or stream manager). The checks below cost ~3 us on a pydantic model (its __getattr__
# raises for every missing attribute), so they run once per type.
_PLAIN: dict[tuple[Any, type], bool] = {}


def plain_result(result: Any, adapter: Adapter) -> bool:
    k = (adapter, type(result))
    plain = _PLAIN.get(k)
    if plain is None:
        plain = not (
            hasattr(adapter, "inspect_result")
            or _is_stainless_stream(result)
            or (hasattr(result, "http_response") and callable(getattr(result, "parse", None)))
            or type(result).__name__.endswith("StreamManager")
            or type(result).__name__ in _RESPONSE_MANAGERS
            or inspect.isgenerator(result)
            or inspect.isasyncgen(result)
        )
        if len(_PLAIN) < 1024:
            _PLAIN[k] = plain
    return plain


def observe_result(result: Any, call: CallContext) -> Any:
    """Record a finished call, or hook a stream so it records when it ends. Returns ``result``."""
    if call.finished or call.observing:
        return result
    if plain_result(result, call.adapter):
        call.finished_response(result)
        return result
    inspect_result = getattr(call.adapter, "inspect_result", None)
    if inspect_result is not None:
        shape = inspect_result(result, call.request)  # a ResultShape, or None: read on below
        if shape is not None:
            if shape.hook is not None:
                call.observing = call.stream = True
                shape.hook(shape.events, Recorder(call, shape.accumulator))
            else:
                call.response_started()
                call.finish(shape.usage, shape.error)
            return result
    if _is_stainless_stream(result):
        call.observing = call.stream = True
        return hook_stainless_stream(result, Recorder(call, call.adapter.new_accumulator(call.request)))
    if hasattr(result, "http_response") and callable(getattr(result, "parse", None)):
        return _observe_raw_response(result, call)
    if type(result).__name__ in _RESPONSE_MANAGERS:
        return ResponseManagerProxy(result, call)
    if type(result).__name__.endswith("StreamManager"):
        call.observing = call.stream = True
        return StreamManagerProxy(result, Recorder(call, call.adapter.new_accumulator(call.request)))
    if inspect.isgenerator(result):
        call.observing = call.stream = True
        rec = Recorder(call, call.adapter.new_accumulator(call.request))
        return ended_when_collected(observe_iterator(result, rec), rec)
    if inspect.isasyncgen(result):
        call.observing = call.stream = True
        rec = Recorder(call, call.adapter.new_accumulator(call.request))
        return ended_when_collected(observe_async_iterator(result, rec), rec)
    call.finished_response(result)
    return result


def monotonic_ms() -> float:
    return time.perf_counter() * 1000.0
