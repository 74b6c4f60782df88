"""Exit codes of the client commands, so scripts can branch on what went wrong, and the one
place that turns an SDK error into them (documented in docs/sdk.md)."""

from __future__ import annotations

from enum import IntEnum
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from vpsnap.client import errors


class ExitCode(IntEnum):
    OK = 0
    ERROR = 1  # anything else, e.g. an unexpected answer, a refused confirmation
    USAGE = 2  # bad arguments or options, no API key, a request the server found invalid
    NOT_FOUND = 3  # no such VPS, snapshot or job (in this account)
    CONFLICT = 4  # the state forbids it: no free slot, name taken, busy, not ready
    AUTH = 5  # key missing, unknown, expired or revoked, or lacking a scope
    RATE_LIMITED = 6  # still rate limited after the SDK's retries
    JOB_FAILED = 7  # the job ran and failed
    TIMEOUT = 8  # the job did not finish within --timeout (it goes on on the server)
    UNAVAILABLE = 9  # no answer from the server, or a 5xx after the SDK's retries


def _codes() -> tuple[tuple[type[errors.VpsnapError], ExitCode], ...]:
    # Imported here: `vpsnap --help` must not load the SDK (and httpx) for this table.
    from vpsnap.client import errors  # noqa: PLC0415

    # Most specific first: a class is matched by the first entry it is an instance of.
    return (
        (errors.JobFailed, ExitCode.JOB_FAILED),
        (errors.JobTimeout, ExitCode.TIMEOUT),
        (errors.NotFound, ExitCode.NOT_FOUND),
        (errors.Conflict, ExitCode.CONFLICT),
        (errors.IdempotencyKeyReused, ExitCode.CONFLICT),
        (errors.Unauthorized, ExitCode.AUTH),
        (errors.Forbidden, ExitCode.AUTH),
        (errors.RateLimited, ExitCode.RATE_LIMITED),
        (errors.InvalidRequest, ExitCode.USAGE),
        (errors.ConfigurationError, ExitCode.USAGE),
        (errors.AmbiguousVps, ExitCode.USAGE),
        (errors.ServerError, ExitCode.UNAVAILABLE),
        (errors.ConnectionFailed, ExitCode.UNAVAILABLE),
    )


def exit_code_for(error: errors.VpsnapError) -> ExitCode:
    return next((code for cls, code in _codes() if isinstance(error, cls)), ExitCode.ERROR)
