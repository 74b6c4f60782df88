"""The periodic-task loop: runs at start, on its interval, survives failures, stops by flag."""

from __future__ import annotations

import asyncio

from vpsnap.scheduler.loop import PeriodicTask, run_scheduler


async def test_runs_at_once_then_on_interval_and_survives_a_failing_run() -> None:
    calls: list[str] = []
    stopping = asyncio.Event()

    third_run = asyncio.Event()

    async def flaky() -> None:
        calls.append("flaky")
        if calls.count("flaky") >= 3:
            third_run.set()
        if calls.count("flaky") == 1:
            raise RuntimeError("database hiccup")

    async def steady() -> None:
        calls.append("steady")

    loop = asyncio.create_task(
        run_scheduler(
            [PeriodicTask("flaky", 0.05, flaky), PeriodicTask("steady", 10, steady)], stopping
        )
    )
    # Kept running after its first run raised (waited for, not timed: a loaded CI machine
    # may take longer than three intervals).
    await asyncio.wait_for(third_run.wait(), 10)
    stopping.set()
    await asyncio.wait_for(loop, 5)
    assert calls.count("steady") == 1  # at start only: its interval is far away


async def test_stopping_waits_for_a_run_in_progress() -> None:
    stopping = asyncio.Event()
    finished = asyncio.Event()

    async def slow() -> None:
        stopping.set()  # asked to stop while running
        await asyncio.sleep(0.1)
        finished.set()

    await asyncio.wait_for(run_scheduler([PeriodicTask("slow", 5, slow)], stopping), 2)
    assert finished.is_set()
