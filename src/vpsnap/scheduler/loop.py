"""The scheduler: periodic tasks of the embedded server, each on its own interval.

A task runs once at start (so a server that was down catches up at once), or ``first_delay``
seconds after it for heavy work that must not compete with the API's first requests (the
passes over every VPS of the node), and then every interval. Long runs are paced and stop at a
page boundary (``vpsnap.pacing``): a run works at most ``busy_share`` of the time, and a stop
ends it at its next page instead of after its last. Stopping is never by cancelling a task
inside a transaction.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import structlog

from vpsnap.domain.errors import DatabaseUnavailable
from vpsnap.pacing import DEFAULT_BUSY_SHARE, Pace, RunStopped, pacing

log = structlog.get_logger("vpsnap.scheduler")

# A run this long is worth a line in the log (a pass over a large fleet), in seconds.
_SLOW_RUN_S = 5.0


@dataclass(frozen=True, slots=True)
class PeriodicTask:
    name: str
    interval_seconds: float
    run: Callable[[], Awaitable[object]]
    first_delay_seconds: float = 0.0


async def run_periodically(
    task: PeriodicTask, stopping: asyncio.Event, busy_share: float = DEFAULT_BUSY_SHARE
) -> None:
    pace = Pace(stopping, busy_share)
    if task.first_delay_seconds > 0:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stopping.wait(), task.first_delay_seconds)
    while not stopping.is_set():
        started = time.perf_counter()
        try:
            with pacing(pace):
                await task.run()
        except RunStopped:
            log.info("scheduled_task_interrupted", task=task.name, reason="stopping")
            return
        except DatabaseUnavailable as exc:
            # Expected while the database restarts or another writer holds SQLite's lock: the
            # next run tries again. A warning with the reason, not an error with a traceback.
            log.warning("scheduled_task_deferred", task=task.name, reason=exc.log_detail)
        except Exception:  # one failed run (a database hiccup) must not end the task
            log.exception("scheduled_task_failed", task=task.name)
        elapsed = time.perf_counter() - started
        if elapsed >= _SLOW_RUN_S:
            log.info("scheduled_task_slow", task=task.name, seconds=round(elapsed, 1))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stopping.wait(), task.interval_seconds)


async def run_scheduler(
    tasks: list[PeriodicTask], stopping: asyncio.Event, busy_share: float = DEFAULT_BUSY_SHARE
) -> None:
    """Run ``tasks`` until ``stopping`` (each run's pages paced to ``busy_share``, in (0, 1])."""
    log.info("scheduler_started", tasks=[t.name for t in tasks])
    await asyncio.gather(*(run_periodically(t, stopping, busy_share) for t in tasks))
    log.info("scheduler_stopped")
