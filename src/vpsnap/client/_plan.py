"""The sans-IO core of the SDK: every operation is a generator (a *plan*) that yields effects
(send this request, sleep, tell a callback) and receives their results. A sync or an async
runner performs the effects, so each operation is written once for both clients."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Generator, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class ApiRequest:
    """One HTTP request, fully built: a retry sends exactly these bytes again."""

    method: str
    path: str
    params: tuple[tuple[str, str], ...] = ()
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes | None = None
    extra_read_seconds: float = 0.0  # a long-poll holds the answer back this long

    @property
    def idempotency_key(self) -> str | None:
        return next((v for k, v in self.headers if k == "Idempotency-Key"), None)

    @property
    def safe_to_retry(self) -> bool:
        """A GET changes nothing; a POST or DELETE with an Idempotency-Key is replayed, not
        run twice, by the server."""
        return self.method == "GET" or self.idempotency_key is not None


@dataclass(frozen=True, slots=True)
class Send:
    """Send a request; the plan gets the ``httpx.Response``, or the transport error thrown in."""

    request: ApiRequest


@dataclass(frozen=True, slots=True)
class Sleep:
    seconds: float


@dataclass(frozen=True, slots=True)
class Notify:
    """Call a user's callback (awaited by the async runner when it returns an awaitable)."""

    callback: Callable[[Any], object]
    value: object


Effect = Send | Sleep | Notify
Plan = Generator[Effect, Any, T]


def get(
    path: str,
    params: Mapping[str, str | None] | None = None,
    *,
    headers: tuple[tuple[str, str], ...] = (),
    extra_read_seconds: float = 0.0,
) -> ApiRequest:
    query = tuple((k, v) for k, v in (params or {}).items() if v is not None)
    return ApiRequest("GET", path, query, headers, extra_read_seconds=extra_read_seconds)


def mutation(method: str, path: str, body: Mapping[str, Any] | None = None) -> ApiRequest:
    """A POST or DELETE with a fresh Idempotency-Key, reused by every retry of this call."""
    headers: tuple[tuple[str, str], ...] = (("Idempotency-Key", str(uuid.uuid4())),)
    content = None
    if body is not None:
        # Serialized once: the server fingerprints the raw bytes, so retries must not re-encode.
        content = json.dumps(body, separators=(",", ":")).encode()
        headers += (("Content-Type", "application/json"),)
    return ApiRequest(method, path, (), headers, content)
