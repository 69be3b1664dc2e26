"""The emulator's shared state (:class:`Emulator`) and its ASGI app (:func:`create_app`).

Control routes, beside the provider routes each wire module adds:

- ``GET  /_emulator/health``  -> ``{"status": "ok", "clock": ..., "manual_clock": ..., "families": [...],
  "max_body_bytes": ..., "any_model": ...}``
- ``POST /_emulator/knobs``   ``{"latency_ms": 50, "scope": "sk-test"?}`` -> the knobs now in force
  (fields not given keep their value; without ``scope`` the defaults change)
- ``POST /_emulator/reset``   forget every cache entry and restore the initial knobs
- ``POST /_emulator/advance`` ``{"seconds": 300}`` -> moves a :class:`ManualClock` (409 otherwise)
"""

from __future__ import annotations

import asyncio
import dataclasses
import importlib
import random
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from .._clock import ManualClock
from ..cachemodel import CacheModel, Knobs
from ._diagnostics import DiagnosticsStore
from ._errors import WireError, WireRoute, error_response, json_response
from ._models import require_known_model
from ._wire import DEFAULT_MAX_BODY_BYTES, read_json

FAMILIES = ("anthropic", "bedrock", "openai", "gemini")
Sleep = Callable[[float], Awaitable[Any]]


class Emulator:
    """The state one emulator serves from: the cache model, the clock, the knobs, the sleep,
    and the fingerprints cache diagnostics compare with (``diagnostics``, :mod:`._diagnostics`).

    ``model`` defaults to ``CacheModel(clock=clock, knobs=knobs)``. ``sleep`` is what knob
    delays wait with (``asyncio.sleep``); the clock only stamps cache entries, so a manual
    clock does not slow anything down.

    ``max_body_bytes`` is the largest request body served (default 32 MiB, Anthropic's
    documented Messages limit); a larger one gets the provider's "too large" error before it is
    read. ``ValueError`` unless it is an integer >= 1.

    Only models the provider serves are answered (:mod:`._models`); any other name gets the
    provider's own not-found error, unless ``any_model`` is true.
    """

    def __init__(
        self,
        *,
        clock: Callable[[], float] = time.time,
        knobs: Knobs | None = None,
        model: CacheModel | None = None,
        sleep: Sleep = asyncio.sleep,
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
        any_model: bool = False,
    ) -> None:
        if not isinstance(max_body_bytes, int) or isinstance(max_body_bytes, bool) or max_body_bytes < 1:
            raise ValueError(f"max_body_bytes must be an integer >= 1, got {max_body_bytes!r}")
        self.max_body_bytes = max_body_bytes
        self.any_model = any_model
        self.clock = clock
        self._own_model = model is None
        self.cache = model if model is not None else CacheModel(clock=clock, knobs=knobs)
        if model is not None and knobs is not None:
            self.cache.set_knobs(knobs)
        self.sleep = sleep
        self._initial_knobs = dataclasses.replace(self.cache.knobs)
        self._lock = threading.Lock()
        self._rngs: dict[int | None, random.Random] = {}
        self.diagnostics = DiagnosticsStore()

    # -- knobs --------------------------------------------------------------------------------

    def set_knobs(self, knobs: Knobs | None = None, *, scope: str | None = None, **fields: Any) -> Knobs:
        """Replace the knobs (of ``scope``, or the defaults), or change some of their fields:
        ``emu.set_knobs(ttft_ms=200)``. Returns the knobs now in force; ``ValueError`` for an
        out-of-range value (:class:`Knobs` checks itself)."""
        base = knobs if knobs is not None else self.knobs_for(scope)
        new = dataclasses.replace(base, **fields)
        self.cache.set_knobs(new, scope=scope)
        with self._lock:
            self._rngs.pop(new.seed, None)  # a seed given again restarts its sequence
        return new

    def check_model(self, family: str, model: str) -> None:
        """Raise ``family``'s own not-found error for a model it does not serve (never with
        ``any_model``)."""
        if not self.any_model:
            require_known_model(family, model)

    def knobs_for(self, scope: str | None) -> Knobs:
        return self.cache.knobs if scope is None else self.cache.knobs_for(scope)

    def draw_error(self, knobs: Knobs) -> bool:
        """Whether this call fails, drawn from ``knobs.error_rate`` with a generator seeded by
        ``f"{knobs.seed}/errors"`` (calls with the same seed share one sequence; ``seed=None``
        is deterministic too, as misses are)."""
        if knobs.error_rate <= 0:
            return False
        if knobs.error_rate >= 1:
            return True
        with self._lock:
            rng = self._rngs.get(knobs.seed)
            if rng is None:
                rng = self._rngs[knobs.seed] = random.Random(f"{knobs.seed}/errors")
            return rng.random() < knobs.error_rate

    # -- clock and state ----------------------------------------------------------------------

    @property
    def manual_clock(self) -> bool:
        return isinstance(self.clock, ManualClock)

    def advance(self, seconds: float) -> float:
        """Move a :class:`ManualClock`; ``TypeError`` on any other clock."""
        if not isinstance(self.clock, ManualClock):
            raise TypeError("advance() needs an Emulator built with clock=ManualClock()")
        return self.clock.advance(seconds)

    def reset(self) -> None:
        """Forget every cache entry and diagnostics fingerprint; restore the knobs the emulator
        was built with (a model it built is replaced, which also drops per-scope knobs; a model
        passed in is reset)."""
        knobs = dataclasses.replace(self._initial_knobs)
        if self._own_model:
            self.cache = CacheModel(clock=self.clock, knobs=knobs)
        else:
            self.cache.reset()
            self.cache.set_knobs(knobs)
        self.diagnostics.clear()
        with self._lock:
            self._rngs.clear()

    def app(self) -> Starlette:
        return create_app(self)


# -- the app --------------------------------------------------------------------------------


def _family_of(path: str) -> str:
    if path.startswith("/v1/messages"):
        return "anthropic"
    if path.startswith("/model/"):
        return "bedrock"
    if (
        path.startswith(("/v1beta/", "/v1alpha/"))
        or ":generateContent" in path
        or ":streamGenerateContent" in path
    ):
        return "gemini"
    return "openai" if path.startswith(("/v1/", "/openai/")) else "anthropic"


def wire_routes(emu: Emulator) -> list[BaseRoute]:
    """The provider routes of every wire module present (``emulator/<family>.py``)."""
    routes: list[BaseRoute] = []
    for family in FAMILIES:
        name = f"{__package__}.{family}"
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as e:
            if e.name != name:
                raise
            continue
        routes.extend(module.routes(emu))
    return routes


def _control_routes(emu: Emulator) -> list[BaseRoute]:
    async def health(request: Request) -> Response:
        return json_response(
            {
                "status": "ok",
                "clock": emu.clock(),
                "manual_clock": emu.manual_clock,
                "families": sorted(_served_families(request.app)),
                "max_body_bytes": emu.max_body_bytes,
                "any_model": emu.any_model,
            }
        )

    async def knobs(request: Request) -> Response:
        try:
            body = await read_json(request, "anthropic", emu.max_body_bytes)
            scope = body.pop("scope", None)
            names = {f.name for f in dataclasses.fields(Knobs)}
            unknown = sorted(set(body) - names)
            if unknown:
                raise WireError(400, f"unknown knobs: {', '.join(unknown)}")
            if scope is not None and not isinstance(scope, str):
                raise WireError(400, f"scope must be a string, got {scope!r}")
            new = emu.set_knobs(scope=scope, **body)
        except (WireError, ValueError) as e:
            return _control_error(e)
        return json_response({"scope": scope, **dataclasses.asdict(new)})

    async def reset(request: Request) -> Response:
        emu.reset()
        return json_response({"status": "reset"})

    async def advance(request: Request) -> Response:
        try:
            seconds = (await read_json(request, "anthropic", emu.max_body_bytes)).get("seconds", 0)
            if not isinstance(seconds, (int, float)) or isinstance(seconds, bool):
                raise WireError(400, f"seconds must be a number, got {seconds!r}")
            if not emu.manual_clock:
                return json_response({"error": "the emulator runs on the wall clock"}, status=409)
            now = emu.advance(seconds)
        except (WireError, ValueError) as e:
            return _control_error(e)
        return json_response({"clock": now})

    return [
        Route("/_emulator/health", health, methods=["GET"]),
        Route("/_emulator/knobs", knobs, methods=["POST"]),
        Route("/_emulator/reset", reset, methods=["POST"]),
        Route("/_emulator/advance", advance, methods=["POST"]),
    ]


def _control_error(e: WireError | ValueError) -> Response:
    """A control route's error: ``{"error": message}`` with the WireError's status (400 for a
    ValueError)."""
    if isinstance(e, WireError):
        return json_response({"error": e.message}, status=e.status)
    return json_response({"error": str(e)}, status=400)


def _served_families(app: Starlette) -> set[str]:
    return {route.family for route in app.routes if isinstance(route, WireRoute)}


async def _http_error(request: Request, exc: Exception) -> Response:
    """404 and 405 in the error shape of the provider whose route the path matched (405), or
    whose paths it looks like (404)."""
    status = exc.status_code if isinstance(exc, HTTPException) else 500
    message = {404: f"Not found: {request.url.path}", 405: f"Method {request.method} not allowed"}.get(
        status, "Error"
    )
    route = request.scope.get("route")
    family = route.family if isinstance(route, WireRoute) else _family_of(request.url.path)
    return error_response(family, status, message)


def create_app(emulator: Emulator | None = None, **kwargs: Any) -> Starlette:
    """The ASGI app serving ``emulator`` (built from ``kwargs`` when None)."""
    emu = emulator if emulator is not None else Emulator(**kwargs)
    app = Starlette(
        routes=[*_control_routes(emu), *wire_routes(emu)],
        exception_handlers={404: _http_error, 405: _http_error},
    )
    app.state.emulator = emu
    return app
