"""``/api/jobs/{jobId}``: poll an operation, optionally long-polling with ``Prefer: wait=N``."""

from __future__ import annotations

import re
from typing import Annotated

from fastapi import APIRouter, Header, Request, Response

from vpsnap.api.deps import CallerDep, ServicesDep
from vpsnap.api.openapi import problem_responses
from vpsnap.api.params import JobIdPath
from vpsnap.api.presenters import job_out
from vpsnap.api.problems import base_url, problem_body
from vpsnap.api.schemas import JobOut

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
    error = None
    if job.error is not None:
        error = problem_body(
            job.error,
            instance=f"/api/jobs/{job.id}",
            request_id=request.state.request_id,
            base=base_url(request.scope),
        )
    return job_out(job, error)
