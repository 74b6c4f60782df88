"""What every long-running vpsnap process shares: uvicorn without its own signal handling,
and SIGTERM/SIGINT turned into a clean stop.

uvicorn re-raises a captured SIGTERM once ``serve()`` returns, which ends the process before
vpsnap's own shutdown runs (the worker's grace for running jobs, releasing locks): a job in
flight would stay ``in_progress`` until the next start. vpsnap's processes install their
handlers themselves (``stop_on_signals``).
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Coroutine, Iterator
from typing import Any, TypeVar

import uvicorn

T = TypeVar("T")


def run_event_loop(main: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run`` for the long-running processes, on uvloop where it is installed (it is
    with uvicorn[standard]; bench/scale.py measures the difference, docs/performance.md), on
    the standard loop elsewhere."""
    try:
        import uvloop  # noqa: PLC0415 - optional: imported only where a process starts
    except ImportError:
        return asyncio.run(main)
    return uvloop.run(main)


class Server(uvicorn.Server):
    """uvicorn without its own signal handling (see the module docstring)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


@contextlib.contextmanager
def stop_on_signals(
    stopping: asyncio.Event, server: uvicorn.Server | None = None
) -> Iterator[None]:
    """SIGTERM and SIGINT set ``stopping`` (and stop ``server``) for the block's duration."""
    loop = asyncio.get_running_loop()

    def stop() -> None:
        stopping.set()
        if server is not None:
            server.should_exit = True

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop)
    try:
        yield
    finally:
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)
