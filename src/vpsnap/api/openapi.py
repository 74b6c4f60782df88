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

_PROBLEM_REF = {"$ref": "#/components/schemas/ProblemOut"}
_DESCRIPTIONS = {
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    409: "Conflict",
    413: "Content Too Large",
    415: "Unsupported Media Type",
    429: "Too Many Requests",
    503: "Service Unavailable",
    507: "Insufficient Storage",
}


def problem_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """``responses=`` of a route that answers these statuses with a problem document."""
    return {
        status: {"model": ProblemOut, "content": {PROBLEM_MEDIA_TYPE: {}}} for status in statuses
    }


def _problem(status: int) -> dict[str, Any]:
    return {
        "description": _DESCRIPTIONS.get(status, "Error"),
        "content": {PROBLEM_MEDIA_TYPE: {"schema": dict(_PROBLEM_REF)}},
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
        for operation in item.values():
            if path.startswith("/api/"):
                operation.setdefault("security", list(_SECURITY))
            responses: dict[str, Any] = operation.setdefault("responses", {})
            # A request that fails validation is `400 invalid_request`, never 422.
            if responses.pop("422", None) is not None:
                responses.setdefault("400", _problem(400))
            if "requestBody" in operation:
                # The edge limits every body; the handlers accept JSON only.
                responses.setdefault("413", _problem(413))
                responses.setdefault("415", _problem(415))
            # The edge rate-limits every request, whatever the route.
            responses.setdefault("429", _problem(429))
            for status, response in responses.items():
                if status.isdigit() and int(status) >= 400 and _is_problem(response):
                    response["content"] = {PROBLEM_MEDIA_TYPE: {"schema": dict(_PROBLEM_REF)}}
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
