"""``/api/jobs/{jobId}``: poll an operation, optionally long-polling with ``Prefer: wait=N``."""

from __future__ import annotations

import re
from typing import Annotated

from fastapi import APIRouter, Header, Query, Request, Response

from vpsnap.api.deps import CallerDep, ServicesDep
from vpsnap.api.openapi import problem_responses
from vpsnap.api.params import CursorParam, JobIdPath
from vpsnap.api.presenters import job_out
from vpsnap.api.problems import base_url, problem_body
from vpsnap.api.schemas import JobOut, JobPageOut
from vpsnap.domain.ids import VPS_ID_PATTERN
from vpsnap.domain.model import Job, JobStatus

router = APIRouter(prefix="/api/jobs", tags=["Jobs"])

MAX_WAIT_SECONDS = 60
_WAIT = re.compile(r"(?:^|[,;\s])wait\s*=\s*(\d+)", re.IGNORECASE)


def requested_wait(prefer: str | None) -> int | None:
    """The ``wait`` preference of RFC 7240, capped at 60 s; None when absent."""
    if not prefer:
        return None
    match = _WAIT.search(prefer)
    if match is None:
        return None
    return min(int(match.group(1)), MAX_WAIT_SECONDS)


def _job_out(job: Job, request: Request) -> JobOut:
    error = None
    if job.error is not None:
        error = problem_body(
            job.error,
            instance=f"/api/jobs/{job.id}",
            request_id=request.state.request_id,
            base=base_url(request.scope),
        )
    return job_out(job, error)


@router.get(
    "",
    operation_id="listJobs",
    response_model=JobPageOut,
    responses=problem_responses("invalid_request", "invalid_cursor", "vps_not_found"),
)
async def list_jobs(
    request: Request,
    principal: CallerDep,
    services: ServicesDep,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    cursor: CursorParam = None,
    vps_id: Annotated[
        str | None,
        Query(alias="vpsId", pattern=VPS_ID_PATTERN, description="Only this VPS's jobs."),
    ] = None,
    status: JobStatus | None = None,
) -> JobPageOut:
    """The account's jobs, newest first; filters `vpsId` and `status`. Finished jobs are kept
    at least 7 days. Follow `nextCursor` for older ones."""
    page = await services.jobs.list(
        principal, vps_id=vps_id, status=status, cursor=cursor, limit=limit
    )
    return JobPageOut(
        data=[_job_out(j, request) for j in page.items],
        has_more=page.has_more,
        next_cursor=page.next_cursor,
    )


@router.get(
    "/{job_id}",
    operation_id="getJob",
    response_model=JobOut,
    responses=problem_responses("job_not_found"),
)
async def get_job(
    job_id: JobIdPath,
    request: Request,
    response: Response,
    principal: CallerDep,
    services: ServicesDep,
    prefer: Annotated[str | None, Header()] = None,
) -> JobOut:
    """A job's status. With `Prefer: wait=N` (N ≤ 60) the answer comes as soon as the status
    changes or after N seconds."""
    wait = requested_wait(prefer)
    if wait is None:
        job = await services.jobs.get(principal, job_id)
    else:
        job = await services.jobs.wait(principal, job_id, float(wait))
        response.headers["Preference-Applied"] = f"wait={wait}"
    return _job_out(job, request)
