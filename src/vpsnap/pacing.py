"""Pacing of the scheduler's long runs: a pass over every VPS of the fleet (power states, data
stores, reconciliation, the retention sweep) leaves room for the API and stops promptly.

Such a run works a page (one transaction) at a time and calls ``between_pages()`` between two
pages. Under the scheduler (``vpsnap.scheduler.loop`` sets the run's ``Pace``) that call:

- ends the run with ``RunStopped`` when the process is stopping: a page boundary is a safe
  point (every page is its own transaction, and the runs are idempotent: the next start does
  the rest), so a SIGTERM does not wait for a pass over 10,000 VPSes to finish;
- pauses, so the run takes at most ``busy_share`` of the wall time: having worked ``t``
  seconds since the last pause, it sleeps ``t * (1 - busy_share) / busy_share``. The API's
  requests run in those pauses instead of queueing behind the next page.

Outside the scheduler (``vpsnap admin reconcile``, tests) it only lets the event loop run other
tasks for a moment.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from contextvars import ContextVar

DEFAULT_BUSY_SHARE = 0.5


class RunStopped(Exception):
    """The process is stopping: the run ends at this page boundary (nothing half done)."""


class Pace:
    """One periodic task's pacing: its stop flag and the share of the time it may work."""

    def __init__(self, stopping: asyncio.Event, busy_share: float = DEFAULT_BUSY_SHARE) -> None:
        if not 0 < busy_share <= 1:
            raise ValueError(f"busy share must be in (0, 1], got {busy_share}")
        self.stopping = stopping
        self.busy_share = busy_share
        self.paused_seconds = 0.0
        """Time spent pausing so far (for the tests' and the operator's eyes)."""
        self._since: float | None = None

    def start(self) -> None:
        """A run begins: its work is counted from now."""
        self._since = asyncio.get_running_loop().time()

    async def between_pages(self) -> None:
        """Raise ``RunStopped`` when stopping; else pause in proportion to the work since the
        last pause (``busy_share``)."""
        if self.stopping.is_set():
            raise RunStopped
        loop = asyncio.get_running_loop()
        now = loop.time()
        worked = now - (self._since if self._since is not None else now)
        pause = worked * (1 - self.busy_share) / self.busy_share
        if pause > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stopping.wait(), pause)
            self.paused_seconds += pause
            if self.stopping.is_set():
                raise RunStopped
        else:
            await asyncio.sleep(0)
        self._since = loop.time()


_current: ContextVar[Pace | None] = ContextVar("vpsnap_pace", default=None)


@contextlib.contextmanager
def pacing(pace: Pace) -> Iterator[None]:
    """``between_pages()`` in this context (and the tasks it starts) uses ``pace``."""
    token = _current.set(pace)
    pace.start()
    try:
        yield
    finally:
        _current.reset(token)


async def between_pages() -> None:
    """Call between two pages (transactions) of a long run; see the module docstring.

    Raises ``RunStopped`` when the scheduler running it is stopping."""
    pace = _current.get()
    if pace is None:
        await asyncio.sleep(0)
        return
    await pace.between_pages()
