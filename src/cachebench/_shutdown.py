"""SIGTERM writes what the trackers' stores have pending, then ends the process as SIGTERM would.

Installed by the first tracker with a store, from the main thread, and only where SIGTERM
still has its default action (an application's own handler, or its choice to ignore the
signal, is left alone: such a handler usually exits through ``sys.exit``, and interpreter
exit writes what is pending). The handler runs at an arbitrary point of the main thread, so
it takes no lock the interrupted code may hold: it queues a write on each consumer
(``SimpleQueue.put`` is reentrant), waits on an event of its own for at most
:data:`~cachebench.engine.EXIT_WAIT_S`, restores the default action and re-sends the signal.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from types import FrameType

from .engine import _ENGINES, EXIT_WAIT_S, Engine

_installed = False


def flush_on_sigterm() -> None:
    """Install the handler (once; from the main thread; over the default action only)."""
    global _installed
    if _installed or threading.current_thread() is not threading.main_thread():
        return
    try:
        if signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
            return
        signal.signal(signal.SIGTERM, _on_sigterm)
    except (ValueError, OSError):  # no signals here (an embedded interpreter)
        return
    _installed = True


def _written(engine: Engine, done: threading.Event) -> None:
    try:
        engine._write_all()
    finally:
        done.set()


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    waits = []
    for engine in list(_ENGINES):
        if engine.writer is None or engine.closed or engine._consumer.thread is None:
            continue
        done = threading.Event()
        engine.later(_written, engine, done)
        waits.append((engine, done))
    deadline = time.monotonic() + EXIT_WAIT_S
    late = 0
    for engine, done in waits:
        if not done.wait(max(0.0, deadline - time.monotonic())):
            writer = engine.writer
            late += len(writer.rows) if writer is not None else 0
            late += engine._consumer.queue.qsize()
    if late:
        # (os.write: no lock, where logging would take the one the interrupted code may hold)
        os.write(
            2,
            f"cachebench: SIGTERM: the store was not written within {EXIT_WAIT_S:.0f} s "
            f"(the database locked?); about {late} call(s) not stored\n".encode(),
        )
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    os.kill(os.getpid(), signal.SIGTERM)
