"""Running the emulator: :class:`EmulatorServer` in a background thread (tests, demos) and
:func:`serve` in the foreground (``cachebench emulate``)."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable
from types import TracebackType
from typing import Any

import uvicorn

from .app import Emulator, create_app


def _config(emulator: Emulator, host: str, port: int, log_level: str) -> uvicorn.Config:
    return uvicorn.Config(
        create_app(emulator),
        host=host,
        port=port,
        log_level=log_level,
        access_log=False,
        lifespan="off",
        timeout_graceful_shutdown=1,
    )


class EmulatorServer:
    """An :class:`Emulator` served by uvicorn on ``host`` in a daemon thread.

    ``port=0`` picks a free port; :attr:`port` and :attr:`url` give the real one once
    :meth:`start` returns. Use it as a context manager, or ``start()``/``stop()``.
    """

    def __init__(
        self,
        emulator: Emulator | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        log_level: str = "warning",
        **emulator_kwargs: Any,
    ) -> None:
        self.emulator = emulator if emulator is not None else Emulator(**emulator_kwargs)
        self.host = host
        self._port = port
        self._log_level = log_level
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("the server is not started")
        return self._port

    @property
    def url(self) -> str:
        """``http://host:port`` with no trailing slash."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def start(self, timeout: float = 10.0) -> EmulatorServer:
        if self._server is not None:
            return self
        sock = _bind(self.host, self._port)
        self._port = sock.getsockname()[1]
        server = uvicorn.Server(_config(self.emulator, self.host, self._port, self._log_level))
        self._server = server

        def run() -> None:
            try:
                server.run(sockets=[sock])
            except BaseException as e:  # reported by start()
                self._error = e
            finally:
                sock.close()

        self._thread = threading.Thread(target=run, name=f"cachebench-emulator-{self._port}", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not server.started and self._thread.is_alive():
            if time.monotonic() > deadline:
                self.stop()
                raise TimeoutError("the emulator did not start")
            time.sleep(0.005)
        if not server.started:
            self._server = None
            raise RuntimeError(f"the emulator failed to start: {self._error!r}")
        return self

    def stop(self) -> None:
        server, thread = self._server, self._thread
        if server is None:
            return
        server.should_exit = True
        if thread is not None:
            thread.join(timeout=10)
        self._server = None
        self._thread = None

    def __enter__(self) -> EmulatorServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP explicitly: asyncio sets TCP_NODELAY only on sockets whose proto says TCP, and
    # without it every response waits ~40 ms for a delayed ACK (Nagle).
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
        sock.listen(2048)  # connections queue from now on, before uvicorn accepts them
    except OSError:
        sock.close()
        raise
    return sock


def serve(
    emulator: Emulator | None = None,
    *,
    host: str = "127.0.0.1",
    port: int = 8790,
    log_level: str = "info",
    announce: Callable[[str], None] | None = None,
) -> None:
    """Serve ``emulator`` in this thread until interrupted (Ctrl-C, SIGTERM). ``port=0`` picks a
    free port; ``announce`` is called with the base URL once the socket is bound."""
    sock = _bind(host, port)
    try:
        real_port = sock.getsockname()[1]
        if announce is not None:
            announce(f"http://{f'[{host}]' if ':' in host else host}:{real_port}")
        server = uvicorn.Server(_config(emulator or Emulator(), host, real_port, log_level))
        server.run(sockets=[sock])
    finally:
        sock.close()
