"""The OpenAPI document as the app answers, not as FastAPI guesses.

FastAPI documents a ``422`` with its own validation schema on every operation with parameters
or a body, and puts a ``model`` of an extra response under ``application/json``. vpsnap answers
validation errors with ``400 invalid_request`` and every error as
``application/problem+json``, so the generated document is corrected here, once per schema.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

from vpsnap.api.problems import PROBLEM_MEDIA_TYPE
from vpsnap.api.schemas import ProblemOut
from vpsnap.domain.problems import CATALOGUE

_PROBLEM_REF = {"$ref": "#/components/schemas/ProblemOut"}
_DESCRIPTIONS = {
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    409: "Conflict",
    413: "Content Too Large",
    415: "Unsupported Media Type",
    405: "Method Not Allowed",
    422: "Unprocessable Content",
    429: "Too Many Requests",
    500: "Internal Server Error",
    503: "Service Unavailable",
    507: "Insufficient Storage",
}


def problem_responses(*answers: str | int) -> dict[int | str, dict[str, Any]]:
    """``responses=`` of a route that answers with these problem codes (catalogue codes; a
    bare status stands for every code of that status). The OpenAPI document lists each
    status once, with an example problem per code (see ``correct``)."""
    codes: dict[int, list[str]] = {}
    for answer in answers:
        if isinstance(answer, int):
            matching = [c for c, k in CATALOGUE.items() if k.status == answer]
        else:
            matching = [answer]
        for code in matching:
            codes.setdefault(CATALOGUE[code].status, []).append(code)
    return {
        status: {
            "model": ProblemOut,
            "content": {PROBLEM_MEDIA_TYPE: {"examples": {c: {} for c in listed}}},
        }
        for status, listed in codes.items()
    }


def _problem(status: int) -> dict[str, Any]:
    return {
        "description": _DESCRIPTIONS.get(status, "Error"),
        "content": {PROBLEM_MEDIA_TYPE: {"schema": dict(_PROBLEM_REF)}},
    }


# What the edge and the framework answer on any operation, whatever its route declares.
_EVERY_OPERATION = ("host_not_allowed", "rate_limited", "internal_error")
_WITH_PARAMETERS = ("invalid_request",)
_WITH_BODY = ("invalid_request", "invalid_json", "payload_too_large", "unsupported_media_type")
# An authenticated operation reads the store (the key, then the operation's own data).
_AUTHENTICATED = ("unauthorized", "database_unavailable")
# The Idempotency-Key header of a state-changing request (docs/idempotency.md).
_STATE_CHANGING = ("invalid_request", "idempotency_key_in_use", "idempotency_key_reused")
# A state-changing /api request authenticated by the dashboard's cookie (docs/dashboard.md).
_COOKIE_STATE_CHANGING = ("csrf_failed",)


# Sent with every problem whose code says when to come back (its extensions.retryAfter).
_RETRY_AFTER_HEADER = {
    "description": "Seconds to wait before retrying (rate_limited, vps_queue_full, "
    "node_unavailable, database_unavailable); the same number as extensions.retryAfter.",
    "schema": {"type": "integer", "minimum": 0},
}


def example_problem(code: str, instance: str) -> dict[str, Any]:
    """A problem document for ``code`` as the API would answer it at ``instance``."""
    kind = CATALOGUE[code]
    example: dict[str, Any] = {
        "type": f"https://vpsnap.example/errors/{code}",
        "title": kind.title,
        "status": kind.status,
        "detail": kind.explanation,
        "code": code,
        "instance": instance,
        "requestId": "req_01hxa3b4c5d6e7f8g9h0j1k2m3",
        "timestamp": "2026-04-27T12:34:56.000Z",
    }
    if code == "invalid_request":
        example["errors"] = [
            {"pointer": "/name", "detail": "String should match pattern", "code": "invalid_format"}
        ]
    if code in ("rate_limited", "vps_queue_full", "node_unavailable", "database_unavailable"):
        example["extensions"] = {"retryAfter": 12}
    return example


def _add_examples(path: str, method: str, operation: dict[str, Any]) -> None:
    """Give every problem response of ``operation`` an example per code it can answer."""
    responses: dict[str, Any] = operation["responses"]
    wanted = list(_EVERY_OPERATION)
    if path.startswith("/api/"):
        wanted += _AUTHENTICATED
    if method.upper() in {"POST", "PUT", "PATCH", "DELETE"}:
        wanted += _STATE_CHANGING
        if path.startswith("/api/"):
            wanted += _COOKIE_STATE_CHANGING
    if operation.get("parameters"):
        wanted += _WITH_PARAMETERS
    if "requestBody" in operation:
        wanted += _WITH_BODY
    for code in wanted:
        status = str(CATALOGUE[code].status)
        response = responses.setdefault(status, _problem(CATALOGUE[code].status))
        response["content"][PROBLEM_MEDIA_TYPE].setdefault("examples", {}).setdefault(code, {})
    for status, response in responses.items():
        media = response.get("content", {}).get(PROBLEM_MEDIA_TYPE)
        if not status.isdigit() or media is None:
            continue
        if status in ("429", "503"):
            response.setdefault("headers", {})["Retry-After"] = _RETRY_AFTER_HEADER
        examples = media.setdefault("examples", {})
        if not examples:  # a status declared without codes: every code of that status
            examples.update({c: {} for c, k in CATALOGUE.items() if str(k.status) == status})
        for code in list(examples):
            examples[code] = {
                "summary": CATALOGUE[code].title,
                "value": example_problem(code, path),
            }


def _is_problem(response: dict[str, Any]) -> bool:
    return any(
        media.get("schema") == _PROBLEM_REF or name == PROBLEM_MEDIA_TYPE
        for name, media in response.get("content", {}).items()
    )


# Authentication is checked by a dependency FastAPI does not see as a security scheme; the
# document declares both ways to present a key so that clients (and /docs' "Authorize") know.
_SECURITY_SCHEMES = {
    "bearerKey": {
        "type": "http",
        "scheme": "bearer",
        "description": "An API key as `Authorization: Bearer <key>`.",
    },
    "apiKeyHeader": {
        "type": "apiKey",
        "in": "header",
        "name": "X-API-Key",
        "description": "An API key as `X-API-Key: <key>`.",
    },
}
_SECURITY: list[dict[str, list[str]]] = [{"bearerKey": []}, {"apiKeyHeader": []}]


def correct(schema: dict[str, Any]) -> dict[str, Any]:
    """Make the generated document say what the app answers (idempotent, in place)."""
    for path, item in schema.get("paths", {}).items():
        for method, operation in item.items():
            if path.startswith("/api/"):
                operation.setdefault("security", list(_SECURITY))
            responses: dict[str, Any] = operation.setdefault("responses", {})
            # A request that fails validation is `400 invalid_request`, never 422.
            responses.pop("422", None)
            for status, response in responses.items():
                if status.isdigit() and int(status) >= 400 and _is_problem(response):
                    examples = response.get("content", {}).get(PROBLEM_MEDIA_TYPE, {})
                    response["content"] = {
                        PROBLEM_MEDIA_TYPE: {
                            "schema": dict(_PROBLEM_REF),
                            "examples": dict(examples.get("examples", {})),
                        }
                    }
            # The edge checks the Host, limits every body and rate-limits every request; the
            # handlers accept JSON only; and anything can fail on our side.
            _add_examples(path, method, operation)
    schema.setdefault("components", {}).setdefault("securitySchemes", {}).update(_SECURITY_SCHEMES)
    components = schema["components"].setdefault("schemas", {})
    components.setdefault("ProblemOut", ProblemOut.model_json_schema(by_alias=True))
    for unused in ("HTTPValidationError", "ValidationError"):
        components.pop(unused, None)
    return schema


class VpsnapApi(FastAPI):
    """FastAPI with the corrected OpenAPI document."""

    _corrected: dict[str, Any] | None = None

    def openapi(self) -> dict[str, Any]:
        schema = super().openapi()  # cached by FastAPI until the routes change
        if schema is not self._corrected:
            self._corrected = correct(schema)
        return schema
