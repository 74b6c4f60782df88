"""The periodic-task loop: runs at start, on its interval, survives failures, stops by flag;
long runs are paced and stop at their next page (``vpsnap.pacing``)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
import structlog.testing

from vpsnap.domain.errors import DatabaseUnavailable
from vpsnap.pacing import Pace, RunStopped, between_pages, pacing
from vpsnap.runtime import Runtime
from vpsnap.scheduler.loop import PeriodicTask, run_scheduler
from vpsnap.settings import Settings


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


async def test_a_database_that_is_away_defers_a_run_with_a_warning_not_an_error() -> None:
    stopping = asyncio.Event()
    runs = 0
    second_run = asyncio.Event()

    async def writes() -> None:
        nonlocal runs
        runs += 1
        if runs == 1:
            raise DatabaseUnavailable("away", retry_after=2, log_detail="database is locked")
        second_run.set()

    with structlog.testing.capture_logs() as logs:
        loop = asyncio.create_task(run_scheduler([PeriodicTask("writes", 0.05, writes)], stopping))
        await asyncio.wait_for(second_run.wait(), 10)
        stopping.set()
        await asyncio.wait_for(loop, 5)
    deferred = [e for e in logs if e["event"] == "scheduled_task_deferred"]
    assert deferred == [
        {
            "event": "scheduled_task_deferred",
            "task": "writes",
            "reason": "database is locked",
            "log_level": "warning",
        }
    ]
    assert not [e for e in logs if e["log_level"] == "error"]


async def test_stopping_waits_for_a_run_in_progress() -> None:
    stopping = asyncio.Event()
    finished = asyncio.Event()

    async def slow() -> None:
        stopping.set()  # asked to stop while running
        await asyncio.sleep(0.1)
        finished.set()

    await asyncio.wait_for(run_scheduler([PeriodicTask("slow", 5, slow)], stopping), 2)
    assert finished.is_set()


async def test_a_stop_ends_a_long_run_at_its_next_page() -> None:
    # A pass over a large fleet (100 pages of 20 ms here, 2 s unpaced) is stopped right after
    # it began: it ends at the next page boundary, not after its last page.
    stopping = asyncio.Event()
    pages: list[int] = []
    began = asyncio.Event()

    async def long_pass() -> None:
        for page in range(100):
            await asyncio.sleep(0.02)  # one page's work
            pages.append(page)
            began.set()
            await between_pages()
        pages.append(-1)  # never reached

    scheduler = asyncio.create_task(
        run_scheduler([PeriodicTask("reconcile", 300, long_pass)], stopping, busy_share=1.0)
    )
    await asyncio.wait_for(began.wait(), 10)
    stopping.set()
    await asyncio.wait_for(scheduler, 1)
    assert 1 <= len(pages) < 100
    assert -1 not in pages


async def test_a_stop_during_a_pause_ends_the_run_at_once() -> None:
    stopping = asyncio.Event()
    pace = Pace(stopping, busy_share=0.01)  # a page of work, then 99 times as long to rest
    with pacing(pace):
        await asyncio.sleep(0.05)
        asyncio.get_running_loop().call_later(0.1, stopping.set)
        started = time.perf_counter()
        with pytest.raises(RunStopped):
            await between_pages()
    assert time.perf_counter() - started < 2  # not the ~5 s pause


async def test_runs_work_their_busy_share_of_the_time_and_let_others_run() -> None:
    stopping = asyncio.Event()
    ticks = 0

    async def api_requests() -> None:
        nonlocal ticks
        while not stopping.is_set():
            await asyncio.sleep(0.005)
            ticks += 1

    def busy(seconds: float) -> None:  # a page's work that holds the event loop
        end = time.perf_counter() + seconds
        while time.perf_counter() < end:
            pass

    requests = asyncio.create_task(api_requests())
    pace = Pace(stopping, busy_share=0.5)
    started = time.perf_counter()
    with pacing(pace):
        for _ in range(5):
            busy(0.04)
            await between_pages()
    elapsed = time.perf_counter() - started
    stopping.set()
    await requests
    # 0.2 s of work took about twice that: the other half of the time was left to the others.
    assert pace.paused_seconds >= 0.19
    assert elapsed >= 0.38
    assert ticks >= 10  # they ran in the pauses (about 40 times unloaded)


async def test_unpaced_runs_and_runs_outside_the_scheduler_only_yield() -> None:
    pace = Pace(asyncio.Event(), busy_share=1.0)
    with pacing(pace):
        await asyncio.sleep(0.05)
        await between_pages()
    assert pace.paused_seconds == 0
    await between_pages()  # no pace set: returns at once, never raises
    with pytest.raises(ValueError, match="busy share"):
        Pace(asyncio.Event(), busy_share=0)


async def test_the_node_scans_start_after_their_delay_and_cheap_tasks_at_once(
    tmp_path: Path,
) -> None:
    settings = Settings(
        data_dir=tmp_path, node_scan_start_delay_seconds=7, reconcile_start_delay_seconds=11
    )
    runtime = Runtime.build(settings)
    try:
        tasks = [*runtime.periodic_tasks(), *runtime.node_tasks(runtime.observer())]
        delays = {t.name: t.first_delay_seconds for t in tasks}
    finally:
        await runtime.close()
    assert delays.pop("power-states") == 7
    assert delays.pop("data-stores") == 7
    assert delays.pop("reconcile") == 11
    assert set(delays.values()) == {0}  # heartbeat, lease reaper, webhooks, expiry...: at once
