"""The shells around an SDK call: what :meth:`CacheTracker.wrap` returns, the stand-in for a
Stainless client's ``request`` method, and :class:`InstrumentHooks`, what an adapter's
``instrument(client, hooks)`` builds its patches with.

Every shell runs the same steps through the tracker's engine: ``begin`` (and ``ahold`` when
async), the SDK call itself (untouched), then ``observe`` on its result or ``fail`` with
its exception, which is re-raised unchanged.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

from .engine import observing as _observing
from .providers._base import SENTINELS  # Stainless leaves "not given" placeholders in bodies
from .providers._stream import plain_result

if TYPE_CHECKING:
    from .engine import CallContext, Engine
    from .providers._base import Adapter
    from .tracker import CacheTracker

__all__ = ["InstrumentHooks", "body_of", "observer_for", "unpatch", "wrapper_for"]


def _nested(engine: Engine, flow: str | None) -> bool:
    """True when this shell runs inside another shell of the same tracker's call."""
    outer = _observing.get()
    if outer is None or outer.engine is not engine:
        return False
    if flow is not None:
        outer.flow = flow
    return True


class InstrumentHooks:
    """What an adapter's ``instrument(client, hooks)`` uses to build its patches.

    ``stainless(original, wanted)`` wraps a Stainless client's ``request`` method, observing
    the calls for which ``wanted(options)`` is true. ``wrap(method)`` observes one SDK method
    exactly as :meth:`CacheTracker.wrap` does. Every patch made through one ``InstrumentHooks``
    observes only while ``on``: undoing them turns it off, so a patch that cannot be taken out
    (another patch was put on top of it since) passes calls straight through.
    """

    __slots__ = ("adapter", "flow", "on", "tracker")

    def __init__(self, tracker: CacheTracker, adapter: Adapter, flow: str | None) -> None:
        self.tracker = tracker
        self.adapter = adapter
        self.flow = flow
        self.on = True

    def stainless(self, original: Callable[..., Any], wanted: Callable[[Any], bool]) -> Callable[..., Any]:
        return observer_for(self.tracker._engine, self.adapter, original, wanted, self.flow, switch=self)

    def wrap(self, method: Callable[..., Any]) -> Callable[..., Any]:
        return wrapper_for(self.tracker._engine, self.adapter, method, self.flow, switch=self)

    def patch_methods(self, obj: Any, names: Iterable[str]) -> list[tuple[Any, str, Any]]:
        """Wrap each named method ``obj`` has, as an instance attribute; return the patches."""
        patches: list[tuple[Any, str, Any]] = []
        for name in names:
            original = getattr(obj, name, None)
            if original is None:
                continue
            setattr(obj, name, self.wrap(original))
            patches.append((obj, name, original))
        return patches


def unpatch(hooks: InstrumentHooks, patches: list[tuple[Any, str, Any]]) -> None:
    """Undo an adapter's patches, newest first. A patch that another was put on top of since
    stays where it is, turned off with ``hooks``: taking it out would take the other one too."""
    hooks.on = False
    for i in range(len(patches) - 1, -1, -1):
        obj, attr, original = patches[i]
        current = getattr(obj, "__dict__", {}).get(attr)
        if getattr(current, "__cachebench_hooks__", None) is not hooks:
            continue
        own = getattr(type(obj), attr, None)
        if getattr(original, "__self__", None) is obj and getattr(original, "__func__", None) is own:
            # The original was the class's own method: dropping our instance attribute restores it.
            obj.__dict__.pop(attr, None)
        else:
            setattr(obj, attr, original)


class _Always:
    """The switch of a shell not made by ``instrument``: always on."""

    on = True


_ALWAYS = _Always()


def wrapper_for(
    engine: Engine,
    adapter: Adapter,
    fn: Callable[..., Any],
    flow: str | None,
    *,
    switch: InstrumentHooks | _Always = _ALWAYS,
) -> Callable[..., Any]:
    """``fn`` observed: same signature, same result (sync, async, streams)."""
    if inspect.iscoroutinefunction(fn):

        @functools.wraps(fn)
        async def awrapped(*args: Any, **kwargs: Any) -> Any:
            if not switch.on or _nested(engine, flow):
                return await fn(*args, **kwargs)
            ctx = engine.begin(adapter, kwargs, flow, hold=False)
            await engine.ahold(ctx)
            token = _observing.set(ctx)
            try:
                result = await fn(*args, **kwargs)
            except BaseException as exc:
                if ctx is not None:
                    engine.fail(ctx, exc)
                raise
            finally:
                _observing.reset(token)
            return engine.observe(result, ctx)

        awrapped.__cachebench_hooks__ = switch  # type: ignore[attr-defined]
        return awrapped

    begin = engine.begin
    finished: set[type] = set()  # result types that are finished responses (no stream, no raw)

    @functools.wraps(fn)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        if not switch.on or _nested(engine, flow):
            return fn(*args, **kwargs)
        ctx = begin(adapter, kwargs, flow)
        token = _observing.set(ctx)
        try:
            result = fn(*args, **kwargs)
        except BaseException as exc:
            if ctx is not None:
                engine.fail(ctx, exc)
            raise
        finally:
            _observing.reset(token)
        if ctx is None:
            return result
        try:  # looking at the caller's result is cachebench's business: under the guard
            if type(result) in finished:
                ctx.finished_response(result)  # the common case: a finished response of a known type
                return result
            if inspect.isawaitable(result) and not hasattr(result, "__aiter__"):
                return _await_then_observe(engine, result, ctx)
            if len(finished) < 64 and plain_result(result, adapter):
                finished.add(type(result))
        except Exception as exc:
            engine.guard.failed("observe", exc)
            return result
        return engine.observe(result, ctx)

    wrapped.__cachebench_hooks__ = switch  # type: ignore[attr-defined]
    return wrapped


async def _await_then_observe(engine: Engine, awaitable: Any, ctx: CallContext | None) -> Any:
    await engine.ahold(ctx)
    token = _observing.set(ctx)
    try:
        result = await awaitable
    except BaseException as exc:
        if ctx is not None:
            engine.fail(ctx, exc)
        raise
    finally:
        _observing.reset(token)
    return engine.observe(result, ctx)


def body_of(options: Any) -> Mapping[str, Any] | None:
    """The JSON body of a Stainless request's ``options``, without the SDK's sentinels."""
    data = getattr(options, "json_data", None)
    if not isinstance(data, Mapping):
        return None
    return {k: v for k, v in data.items() if type(v).__name__ not in SENTINELS}


def observer_for(
    engine: Engine,
    adapter: Adapter,
    original: Callable[..., Any],
    wanted: Callable[[Any], bool],
    flow: str | None,
    *,
    switch: InstrumentHooks | _Always = _ALWAYS,
) -> Callable[..., Any]:
    """A stand-in for an SDK client's transport method (Stainless ``client.request``)."""
    if inspect.iscoroutinefunction(original):

        @functools.wraps(original)
        async def arequest(cast_to: Any, options: Any, *args: Any, **kwargs: Any) -> Any:
            body = None
            try:
                body = (
                    body_of(options) if switch.on and wanted(options) and not _nested(engine, flow) else None
                )
            except Exception as exc:
                engine.guard.failed("instrument", exc)
            if body is None:
                return await original(cast_to, options, *args, **kwargs)
            ctx = engine.begin(adapter, body, flow, hold=False)
            await engine.ahold(ctx)
            token = _observing.set(ctx)
            try:
                result = await original(cast_to, options, *args, **kwargs)
            except BaseException as exc:
                if ctx is not None:
                    engine.fail(ctx, exc)
                raise
            finally:
                _observing.reset(token)
            return engine.observe(result, ctx)

        arequest.__cachebench__ = True  # type: ignore[attr-defined]
        arequest.__cachebench_hooks__ = switch  # type: ignore[attr-defined]
        return arequest

    @functools.wraps(original)
    def request(cast_to: Any, options: Any, *args: Any, **kwargs: Any) -> Any:
        body = None
        try:
            body = body_of(options) if switch.on and wanted(options) and not _nested(engine, flow) else None
        except Exception as exc:
            engine.guard.failed("instrument", exc)
        if body is None:
            return original(cast_to, options, *args, **kwargs)
        ctx = engine.begin(adapter, body, flow)
        token = _observing.set(ctx)
        try:
            result = original(cast_to, options, *args, **kwargs)
        except BaseException as exc:
            if ctx is not None:
                engine.fail(ctx, exc)
            raise
        finally:
            _observing.reset(token)
        return engine.observe(result, ctx)

    request.__cachebench__ = True  # type: ignore[attr-defined]
    request.__cachebench_hooks__ = switch  # type: ignore[attr-defined]
    return request
