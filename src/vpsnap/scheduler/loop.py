"""The scheduler: periodic tasks of the embedded server, each on its own interval.

A task runs once at start (so a server that was down catches up at once), or ``first_delay``
seconds after it for heavy work that must not compete with the API's first requests (the
reconciliation pass), and then every interval. Stopping is by flag between runs, never by
cancelling a task inside a transaction.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import structlog

log = structlog.get_logger("vpsnap.scheduler")


@dataclass(frozen=True, slots=True)
class PeriodicTask:
    name: str
    interval_seconds: float
    run: Callable[[], Awaitable[object]]
    first_delay_seconds: float = 0.0


async def run_periodically(task: PeriodicTask, stopping: asyncio.Event) -> None:
    if task.first_delay_seconds > 0:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stopping.wait(), task.first_delay_seconds)
    while not stopping.is_set():
        try:
            await task.run()
        except Exception:  # one failed run (a database hiccup) must not end the task
            log.exception("scheduled_task_failed", task=task.name)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stopping.wait(), task.interval_seconds)


async def run_scheduler(tasks: list[PeriodicTask], stopping: asyncio.Event) -> None:
    log.info("scheduler_started", tasks=[t.name for t in tasks])
    await asyncio.gather(*(run_periodically(t, stopping) for t in tasks))
    log.info("scheduler_stopped")
