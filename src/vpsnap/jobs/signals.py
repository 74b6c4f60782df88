"""In-process job signals for the embedded mode: an asyncio event for workers, watches for
long-poll waiters. (Scale-out adds PostgreSQL LISTEN/NOTIFY on top of the same interface.)"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager

from vpsnap.domain.model import Job


class _Watch:
    def __init__(self) -> None:
        self.changed = asyncio.Event()
        self.latest: Job | None = None

    async def wait(self, timeout: float) -> bool:
        try:
            await asyncio.wait_for(self.changed.wait(), timeout)
        except TimeoutError:
            return False
        self.changed.clear()
        return True


class InProcessJobEvents:
    """Implements ``vpsnap.domain.ports.JobEvents`` within one process."""

    def __init__(self) -> None:
        self.work_available = asyncio.Event()
        self._watches: dict[str, set[_Watch]] = {}

    def jobs_queued(self) -> None:
        self.work_available.set()

    def job_changed(self, job_id: str, job: Job | None = None) -> None:
        for watch in self._watches.get(job_id, ()):
            watch.latest = job
            watch.changed.set()

    @contextmanager
    def watch(self, job_id: str) -> Iterator[_Watch]:
        watch = _Watch()
        self._watches.setdefault(job_id, set()).add(watch)
        try:
            yield watch
        finally:
            watchers = self._watches.get(job_id)
            if watchers is not None:
                watchers.discard(watch)
                if not watchers:
                    del self._watches[job_id]
