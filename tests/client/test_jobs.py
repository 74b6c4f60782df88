"""Waiting for jobs on a real server: long-poll, the polling fallback, failed and timed out."""

from __future__ import annotations

import asyncio
import itertools
import time

import pytest

from tests.client.support import Recording
from tests.live_server import SLOW_SECONDS, LiveServer
from vpsnap.client import (
    Async,
    AsyncClient,
    Client,
    Job,
    JobFailed,
    JobTimeout,
    SnapshotNameTaken,
)

pytestmark = [pytest.mark.slow, pytest.mark.qemu]


def test_wait_long_polls_and_reports_each_status(server: LiveServer) -> None:
    vps = server.add_vps(1)
    recording = Recording()
    seen: list[str] = []
    with Client(server.url, server.key(), transport=recording) as client:
        operation = client.snapshots.create(vps, "slow-long-poll")
        job = operation.wait(timeout=30, on_progress=lambda j: seen.append(j.status))
    assert (job.status, job.progress) == ("completed", 100)
    polls = recording.to("/api/jobs/")
    answers = [e.response.json()["status"] for e in polls]
    assert seen == list(dict.fromkeys(answers))  # each status once, in order
    assert seen[-1] == "completed"
    long_polls = [e for e in polls if "prefer" in e.request.headers]
    assert long_polls
    assert all(e.response.headers["Preference-Applied"].startswith("wait=") for e in long_polls)
    # The server held an answer until the status changed: no busy loop of requests.
    assert max(e.answered_at - e.sent_at for e in long_polls) >= SLOW_SECONDS / 2
    assert len(polls) <= 4, answers


def test_without_long_poll_it_falls_back_to_polling(server: LiveServer) -> None:
    vps = server.add_vps(1)
    recording = Recording(ignore_long_poll=True)
    with Client(server.url, server.key(), transport=recording) as client:
        job = client.snapshots.create(vps, "slow-polled").wait(timeout=30)
    assert job.status == "completed"
    polls = recording.to("/api/jobs/")
    preferring = [i for i, e in enumerate(polls) if "prefer" in e.request.headers]
    # It asked once, saw the preference ignored, and never asked again.
    assert len(preferring) == 1
    assert len(polls) - preferring[0] >= 3
    delays = [b.sent_at - a.sent_at for a, b in itertools.pairwise(polls[1:])]
    assert all(d >= 0.3 for d in delays), delays


def test_a_failed_job_raises_job_failed_with_its_problem(
    client: Client, server: LiveServer
) -> None:
    vps = server.add_vps(2)
    server.foreign_snapshot(vps, "foreign")  # on disk, not made by vpsnap: the job must refuse
    operation = client.snapshots.create(vps, "foreign")
    with pytest.raises(JobFailed) as failed:
        operation.wait(timeout=30)
    error = failed.value
    assert error.job.status == "failed"
    assert error.code == "snapshot_name_taken"
    assert isinstance(error.error, SnapshotNameTaken)
    assert error.job.error is not None
    assert error.job.error["instance"] == f"/api/jobs/{operation.job_id}"
    assert error.request_id is not None
    assert error.request_id.startswith("req_")
    assert client.snapshots.list(vps).limits.used_snapshots == 0  # its slot is free again
    with pytest.raises(JobFailed):
        client.snapshots.create_safely(vps, "foreign")


def test_a_timeout_is_distinct_and_the_job_goes_on(client: Client, server: LiveServer) -> None:
    vps = server.add_vps(1)
    operation = client.snapshots.create(vps, "slow-timeout")
    started = time.monotonic()
    with pytest.raises(JobTimeout) as timed_out:
        operation.wait(timeout=0.5)
    assert time.monotonic() - started < 1.5
    assert not isinstance(timed_out.value, JobFailed)
    assert timed_out.value.job.status in {"queued", "in_progress"}
    assert "still" in str(timed_out.value)
    assert client.jobs.wait(operation.job_id, timeout=30).status == "completed"


def test_a_finished_job_is_returned_at_once(client: Client, server: LiveServer) -> None:
    vps = server.add_vps(1)
    job = client.snapshots.create(vps, "quick").wait(timeout=30)
    started = time.monotonic()
    again = job.wait()
    assert time.monotonic() - started < 0.1  # no request: it is already finished
    assert again is job
    assert job.refresh() == job


async def test_async_wait_awaits_an_async_progress_callback(server: LiveServer) -> None:
    vps = await asyncio.to_thread(server.add_vps, 1)
    seen: list[str] = []

    async def progress(job: Job[Async]) -> None:
        await asyncio.sleep(0)
        seen.append(job.status)

    async with AsyncClient(server.url, server.key()) as client:
        operation = await client.snapshots.create(vps, "slow-async")
        job = await operation.wait(timeout=30, on_progress=progress)
        fetched = await client.jobs.get(job.job_id)
    assert job.status == "completed"
    assert seen[-1] == "completed"
    assert fetched.finished_at == job.finished_at
