"""Long-running work: the operation a 202 answers with, the job behind it, and waiting for it
(long-poll with ``Prefer: wait``, falling back to polling when the server ignores it)."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from urllib.parse import quote

import httpx

from vpsnap.client._http import exchange, read
from vpsnap.client._plan import Notify, Plan, Sleep, get
from vpsnap.client._runners import (
    Bound,
    M,
    Page,
    PageQuery,
    Runner,
    api_method,
    api_pager,
    page_query,
)
from vpsnap.client.errors import JobFailed, JobTimeout
from vpsnap.client.models import Raw, optional_timestamp, timestamp

DEFAULT_WAIT_TIMEOUT = 600.0
MAX_LONG_POLL_SECONDS = 60  # the server caps `Prefer: wait` there
FIRST_POLL_DELAY = 0.5
MAX_POLL_DELAY = 5.0
TERMINAL_STATUSES = frozenset({"completed", "failed"})


class _FollowsJob(Bound[M]):
    """What a job and an operation share: a job to read and to wait for."""

    job_id: str

    def _known_state(self) -> Job[M] | None:
        return None

    def _fetch(self) -> Plan[Job[M]]:
        job, _ = yield from fetch_job(self._runner, self.job_id)
        return job

    def _wait(
        self,
        *,
        timeout: float | None = DEFAULT_WAIT_TIMEOUT,
        on_progress: Callable[[Job[M]], object] | None = None,
    ) -> Plan[Job[M]]:
        """Wait until the job ends and return it; ``JobFailed`` if it failed, ``JobTimeout``
        after ``timeout`` seconds (None: no limit). ``on_progress(job)`` is called with each
        new status or progress (awaited when it returns an awaitable, with ``AsyncClient``)."""
        return (
            yield from wait_for_job(
                self._runner,
                self.job_id,
                timeout=timeout,
                on_progress=on_progress,
                current=self._known_state(),
            )
        )

    wait = api_method(_wait)


@dataclass(frozen=True)
class Job(_FollowsJob[M]):
    """A job as last read. ``status``: pending, queued, in_progress, completed or failed;
    ``error`` is the problem document of a failed job."""

    _runner: Runner[M] = field(repr=False, compare=False)
    job_id: str
    type: str
    status: str
    progress: int
    vps_id: str
    snapshot_name: str | None
    result: Mapping[str, Any] | None
    error: Mapping[str, Any] | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    raw: Raw = field(repr=False, compare=False)

    @property
    def finished(self) -> bool:
        return self.status in TERMINAL_STATUSES

    def _known_state(self) -> Job[M]:
        return self  # a finished job needs no request at all

    def _refresh(self) -> Plan[Job[M]]:
        """The job as the server has it now."""
        return (yield from self._fetch())

    refresh = api_method(_refresh)


@dataclass(frozen=True)
class Operation(_FollowsJob[M]):
    """The answer to a create, delete or restore: the job to follow (``wait()``, ``job()``).

    ``replayed`` is true when the server answered with the stored answer of an earlier,
    identical request (a retry under the same Idempotency-Key).
    """

    _runner: Runner[M] = field(repr=False, compare=False)
    status: str
    job_id: str
    poll_url: str
    result: Mapping[str, Any] | None
    replayed: bool
    request_id: str | None
    raw: Raw = field(repr=False, compare=False)

    def _job(self) -> Plan[Job[M]]:
        """The operation's job as the server has it now."""
        return (yield from self._fetch())

    job = api_method(_job)


class Jobs(Bound[M]):
    """``client.jobs``: read and wait for jobs by id."""

    def __init__(self, runner: Runner[M]) -> None:
        self._runner = runner

    def _list(
        self,
        *,
        vps_id: str | None = None,
        status: str | None = None,
        limit: int = 20,
        cursor: str | None = None,
    ) -> PageQuery[Job[M]]:
        """``GET /api/jobs``: the account's jobs, newest first (finished ones are kept at least
        7 days), optionally of one VPS (its id) or status; a lazy iterator over pages of
        ``limit`` (1..100). Nothing is sent until it is iterated."""
        runner = self._runner

        def page(at: str | None, size: int) -> Plan[Page[Job[M]]]:
            params = {"limit": str(size), "cursor": at, "vpsId": vps_id, "status": status}
            response = yield from exchange(get("/api/jobs", params), runner.policy)

            def parse(raw: Raw) -> Page[Job[M]]:
                items = tuple(parse_job(runner, item) for item in raw["data"])
                return Page(items, raw["nextCursor"] if raw["hasMore"] else None)

            return read(response, parse)

        return page_query(page, limit, cursor)

    list = api_pager(_list)

    def _get(self, job_id: str) -> Plan[Job[M]]:
        """``GET /api/jobs/{job_id}``."""
        job, _ = yield from fetch_job(self._runner, job_id)
        return job

    get = api_method(_get)

    def _wait(
        self,
        job_id: str,
        *,
        timeout: float | None = DEFAULT_WAIT_TIMEOUT,
        on_progress: Callable[[Job[M]], object] | None = None,
    ) -> Plan[Job[M]]:
        """Wait for a job by id (see ``Job.wait``)."""
        return (
            yield from wait_for_job(self._runner, job_id, timeout=timeout, on_progress=on_progress)
        )

    wait = api_method(_wait)


def parse_job(runner: Runner[M], raw: Raw) -> Job[M]:
    return Job(
        _runner=runner,
        job_id=raw["jobId"],
        type=raw["type"],
        status=raw["status"],
        progress=raw["progress"],
        vps_id=raw["vpsId"],
        snapshot_name=raw["snapshotName"],
        result=raw["result"],
        error=raw["error"],
        created_at=timestamp(raw["createdAt"]),
        started_at=optional_timestamp(raw["startedAt"]),
        finished_at=optional_timestamp(raw["finishedAt"]),
        raw=raw,
    )


def parse_operation(runner: Runner[M], response: httpx.Response) -> Operation[M]:
    def parse(raw: Raw) -> Operation[M]:
        body = raw["operation"]
        return Operation(
            _runner=runner,
            status=body["status"],
            job_id=body["jobId"],
            poll_url=body["pollUrl"],
            result=body["result"],
            replayed=response.headers.get("Idempotent-Replayed") == "true",
            request_id=response.headers.get("X-Request-Id"),
            raw=raw,
        )

    return read(response, parse)


def fetch_job(
    runner: Runner[M], job_id: str, *, long_poll: int | None = None
) -> Plan[tuple[Job[M], bool]]:
    """The job, and whether the server applied the long-poll preference."""
    headers = () if long_poll is None else (("Prefer", f"wait={long_poll}"),)
    request = get(
        f"/api/jobs/{quote(job_id, safe='')}",
        headers=headers,
        extra_read_seconds=float(long_poll or 0),
    )
    response = yield from exchange(request, runner.policy)
    job = read(response, lambda raw: parse_job(runner, raw))
    return job, "Preference-Applied" in response.headers


def wait_for_job(
    runner: Runner[M],
    job_id: str,
    *,
    timeout: float | None,
    on_progress: Callable[[Job[M]], object] | None,
    current: Job[M] | None = None,
) -> Plan[Job[M]]:
    deadline = None if timeout is None else time.monotonic() + timeout
    job = current if current is not None else (yield from fetch_job(runner, job_id))[0]
    reported: tuple[str, int] | None = None
    long_poll = True
    poll_delay = FIRST_POLL_DELAY
    while True:
        if on_progress is not None and (job.status, job.progress) != reported:
            reported = (job.status, job.progress)
            yield Notify(on_progress, job)
        if job.finished:
            break
        remaining = float("inf") if deadline is None else deadline - time.monotonic()
        if remaining <= 0:
            raise JobTimeout(job, timeout or 0.0)
        if long_poll and remaining >= 1:
            # Whole seconds, never past the deadline: the server answers at the latest then.
            seconds = int(min(MAX_LONG_POLL_SECONDS, remaining))
            job, applied = yield from fetch_job(runner, job_id, long_poll=seconds)
            long_poll = applied  # a server without long-poll answered at once: poll instead
        else:
            yield Sleep(min(poll_delay, remaining))
            poll_delay = min(poll_delay * 1.5, MAX_POLL_DELAY)
            job, _ = yield from fetch_job(runner, job_id)
    if job.status == "failed":
        raise JobFailed(job)
    return job
