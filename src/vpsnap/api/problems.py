"""The one place that turns errors into RFC 9457 problem+json responses."""

from __future__ import annotations

from typing import Any

import structlog
from fastapi import Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import JSONResponse

from vpsnap.domain.clock import SystemClock, format_timestamp
from vpsnap.domain.errors import (
    DomainError,
    FieldError,
    Forbidden,
    InvalidJson,
    InvalidRequest,
    JobNotFound,
    MethodNotAllowed,
    NotFound,
    PayloadTooLarge,
    SnapshotNotFound,
    Unauthorized,
    UnsupportedMediaType,
    VpsNotFound,
    WebhookNotFound,
)
from vpsnap.domain.problems import error_summary

PROBLEM_MEDIA_TYPE = "application/problem+json"

_log = structlog.get_logger("vpsnap.api")


def base_url(scope: Any) -> str:
    """The base of a request's links, as the edge decided it (``api.trust.HostPolicy``): the
    configured public URL, or the request's own scheme and *allowed* host. Never read from a
    header here: without the edge's decision, links are relative."""
    base: str = scope.get("state", {}).get("base_url", "")
    return base


def problem_body(
    summary: dict[str, Any], *, instance: str, request_id: str, base: str
) -> dict[str, Any]:
    code = summary["code"]
    body: dict[str, Any] = {
        "type": f"{base}/errors/{code}",
        "title": summary["title"],
        "status": summary["status"],
        "detail": summary["detail"],
        "code": code,
        "instance": instance,
        "requestId": request_id,
        "timestamp": format_timestamp(SystemClock().now()),
    }
    if "errors" in summary:
        body["errors"] = summary["errors"]
    if summary.get("extensions"):
        body["extensions"] = summary["extensions"]
    return body


_CHALLENGE = 'Bearer realm="vpsnap"'


def problem_response(
    scope: Any,
    error: DomainError,
    *,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    """The problem+json answer to ``error``, whichever layer refuses (route, edge, idempotency).

    Every path gets the same extras: ``Retry-After`` from the error's ``retryAfter`` extension
    (rate_limited, vps_queue_full, node_unavailable, database_unavailable say when to come
    back), ``WWW-Authenticate`` on a 401, and the operator's ``log_detail`` (host paths, tool
    output) in the log only.
    """
    state = scope.get("state", {})
    if error.log_detail:
        _log.warning(
            "request_failed_detail",
            request_id=state.get("request_id", ""),
            code=error.code,
            log_detail=error.log_detail,
        )
    if "retryAfter" in error.extensions:
        headers = {"Retry-After": str(error.extensions["retryAfter"]), **(headers or {})}
    if error.code == "unauthorized":
        # RFC 9110 section 11.6.1: a 401 carries at least one challenge (RFC 6750's scheme).
        headers = {"WWW-Authenticate": _CHALLENGE, **(headers or {})}
    summary = error_summary(error)
    body = problem_body(
        summary,
        instance=scope.get("path", ""),
        request_id=state.get("request_id", ""),
        base=base_url(scope),
    )
    return JSONResponse(
        jsonable_encoder(body),
        status_code=summary["status"],
        media_type=PROBLEM_MEDIA_TYPE,
        headers=headers,
    )


# -- translation of framework errors ------------------------------------------------------------

_FIELD_CODES = {
    "missing": "missing_required",
    "extra_forbidden": "unknown_field",
    "string_too_long": "too_long",
    "too_long": "too_long",
    "string_pattern_mismatch": "invalid_format",
    "string_too_short": "invalid_format",
    "value_error": "invalid_format",
    "string_unicode": "invalid_format",  # a lone surrogate ("\ud800"): not storable text
    "greater_than": "out_of_range",
    "greater_than_equal": "out_of_range",
    "less_than": "out_of_range",
    "less_than_equal": "out_of_range",
}


def _pointer(loc: tuple[Any, ...]) -> str:
    where, *path = loc if loc else ("body",)
    parts = [str(p).replace("~", "~0").replace("/", "~1") for p in path]
    if where == "body":
        return "/" + "/".join(parts) if parts else ""
    return f"/{where}/" + "/".join(parts)


def _field_error(error: dict[str, Any]) -> FieldError:
    kind = str(error.get("type", ""))
    code = _FIELD_CODES.get(kind, "invalid_type")
    loc = tuple(error.get("loc", ()))
    detail = str(error.get("msg", "Invalid value."))
    if code == "unknown_field":
        detail = f"Unknown field {loc[-1]!r}: it is not part of this request."
    elif code == "missing_required" and loc:
        detail = f"{loc[-1]!r} is required." if len(loc) > 1 else "A request body is required."
    return FieldError(pointer=_pointer(loc), detail=detail, code=code)


# A malformed path parameter names a resource that cannot exist: its 404, never a 400 (the
# shapes are documented, so a 400 would tell nothing more, and a client needs one answer for
# "no such thing"). Route parameters are named after their resource (api/params.py).
PATH_NOT_FOUND: dict[str, tuple[type[NotFound], str]] = {
    "vps_id": (VpsNotFound, "No VPS with id {value} in this account."),
    "snapshot_id": (SnapshotNotFound, "The VPS has no snapshot named {value}."),
    "job_id": (JobNotFound, "No job with id {value} in this account."),
    "webhook_id": (WebhookNotFound, "No webhook endpoint with id {value} in this account."),
}


def path_not_found(errors: list[dict[str, Any]]) -> NotFound | None:
    """The 404 of the first malformed path parameter among ``errors``, if any."""
    for error in errors:
        loc = tuple(error.get("loc", ()))
        if len(loc) == 2 and loc[0] == "path":
            error_class, detail = PATH_NOT_FOUND.get(
                str(loc[1]), (NotFound, "There is nothing at this path.")
            )
            value = repr(str(error.get("input", "")))
            shown = value if len(value) <= 60 else value[:57] + "..."
            return error_class(detail.format(value=shown))
    return None


def validation_error(exc: RequestValidationError) -> DomainError:
    errors = list(exc.errors())
    missing = path_not_found(errors)
    if missing is not None:
        return missing
    if any(e.get("type") == "json_invalid" for e in errors):
        return InvalidJson("The request body is not valid JSON.")
    field_errors = [_field_error(e) for e in errors]
    return InvalidRequest("The request failed validation.", field_errors)


_HTTP_ERRORS: dict[int, tuple[type[DomainError], str]] = {
    401: (Unauthorized, "Authentication is required."),
    403: (Forbidden, "The credential may not do this."),
    404: (NotFound, "There is nothing at this path."),
    405: (MethodNotAllowed, "This path does not accept this method."),
    413: (PayloadTooLarge, "The request body is too large."),
    415: (UnsupportedMediaType, "Send the request body as application/json."),
}


def http_error(exc: StarletteHTTPException) -> DomainError:
    known = _HTTP_ERRORS.get(exc.status_code)
    if known is not None:
        error_class, detail = known
        return error_class(detail)
    if 400 <= exc.status_code < 500:
        return InvalidRequest(str(exc.detail), [])
    return DomainError("Something failed on our side.")


async def domain_error_handler(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, DomainError)
    return problem_response(request.scope, exc)


def _is_json(content_type: str | None) -> bool:
    if not content_type:
        return True  # a missing body is reported as such, not as a media type problem
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or media.endswith("+json")


async def validation_error_handler(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    missing = path_not_found(list(exc.errors()))
    if missing is not None:
        return problem_response(request.scope, missing)
    if not _is_json(request.headers.get("content-type")):
        error = UnsupportedMediaType("Send the request body as application/json.")
        return problem_response(request.scope, error)
    return problem_response(request.scope, validation_error(exc))


async def http_error_handler(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    error = http_error(exc)
    headers = dict(exc.headers) if exc.headers else None
    return problem_response(request.scope, error, headers=headers)
