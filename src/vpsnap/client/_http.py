"""Sending one request with the SDK's retry rules, and reading its answer (sans-IO)."""

from __future__ import annotations

import email.utils
import random
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

import httpx

from vpsnap.client._plan import ApiRequest, Plan, Send, Sleep
from vpsnap.client.errors import (
    ConnectionFailed,
    UnexpectedResponse,
    VpsnapError,
    error_from_response,
)

T = TypeVar("T")

# Failures after which the request may or may not have reached the server: repeating it is
# safe only for requests the server will not run twice (GET, or a POST/DELETE with a key).
RETRYABLE_TRANSPORT_ERRORS = (httpx.TimeoutException, httpx.NetworkError, httpx.RemoteProtocolError)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How hard the SDK tries before it raises.

    ``attempts`` bounds the tries of one request that fails in transit, answers 5xx, or
    answers ``409 idempotency_key_in_use`` (its first attempt is still running); between them
    the SDK waits a capped, jittered exponential backoff — or, when a 5xx carries
    ``Retry-After`` (``503 database_unavailable``, ``node_unavailable``), at least that long
    (RFC 9110 10.2.3: how long the service expects to be unavailable). A 5xx asking for more than
    ``max_backoff`` seconds is not waited for: it is raised at once, its ``retry_after`` set, so
    the caller decides. A ``429`` is retried after ``Retry-After`` at most
    ``rate_limit_retries`` times and ``max_rate_limit_wait`` seconds in total; past that,
    ``RateLimited`` is raised. Seconds throughout.
    """

    attempts: int = 4
    backoff: float = 0.5
    max_backoff: float = 8.0
    rate_limit_retries: int = 3
    max_rate_limit_wait: float = 60.0

    def backoff_delay(self, retry: int) -> float:
        """Equal jitter: half the capped exponential delay, plus up to as much again, so that
        clients that failed together do not come back together."""
        ceiling = min(self.max_backoff, self.backoff * 2.0**retry)
        return ceiling / 2 + random.uniform(0, ceiling / 2)  # noqa: S311 - not cryptographic


NO_RETRIES = RetryPolicy(attempts=1, rate_limit_retries=0)


def _retry_after(response: httpx.Response) -> float | None:
    """The response's ``Retry-After`` in seconds from now (RFC 9110 10.2.3: delay-seconds or an
    HTTP-date), or None when it has none the SDK can read."""
    value = response.headers.get("Retry-After", "").strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:  # an HTTP-date is GMT; a malformed one may lack the zone
        return None
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def _key_in_use(request: ApiRequest, response: httpx.Response) -> bool:
    if response.status_code != 409 or request.idempotency_key is None:
        return False
    try:
        body = response.json()
    except ValueError:
        return False
    return isinstance(body, dict) and body.get("code") == "idempotency_key_in_use"


def send(request: ApiRequest, policy: RetryPolicy) -> Plan[httpx.Response]:
    """The response to ``request`` after the retries the policy allows (any status)."""
    failures = 0
    rate_limited = 0
    rate_limit_wait = 0.0
    while True:
        try:
            response: httpx.Response = yield Send(request)
        except RETRYABLE_TRANSPORT_ERRORS as exc:
            failures += 1
            if not request.safe_to_retry or failures >= policy.attempts:
                raise ConnectionFailed(
                    f"no answer to {request.method} {request.path} after {failures} "
                    f"attempt(s): {type(exc).__name__}: {exc}"
                ) from exc
            yield Sleep(policy.backoff_delay(failures - 1))
            continue
        status = response.status_code
        if status == 429:
            asked = _retry_after(response)
            delay = 1.0 if asked is None else asked
            if (
                rate_limited < policy.rate_limit_retries
                and rate_limit_wait + delay <= policy.max_rate_limit_wait
            ):
                rate_limited += 1
                rate_limit_wait += delay
                yield Sleep(delay)
                continue
        elif (
            (status >= 500 and status != 501) or _key_in_use(request, response)
        ) and request.safe_to_retry:
            failures += 1
            asked = _retry_after(response)
            if failures < policy.attempts and (asked is None or asked <= policy.max_backoff):
                yield Sleep(max(policy.backoff_delay(failures - 1), asked or 0.0))
                continue
        return response


def exchange(request: ApiRequest, policy: RetryPolicy) -> Plan[httpx.Response]:
    """A successful response, or the error its problem document describes."""
    response = yield from send(request, policy)
    if response.is_success:
        return response
    raise error_from_response(response)


def read(response: httpx.Response, parse: Callable[[Any], T]) -> T:
    """Parse a success body; an answer that does not have the documented shape is reported as
    such (with the request id) instead of as a KeyError deep inside the SDK."""
    try:
        return parse(response.json())
    except VpsnapError:
        raise
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise UnexpectedResponse(
            f"unexpected answer to {response.request.method} {response.request.url.path} "
            f"(HTTP {response.status_code}): {type(exc).__name__}: {exc}",
            status=response.status_code,
            request_id=response.headers.get("X-Request-Id"),
        ) from exc


def fetch(request: ApiRequest, policy: RetryPolicy, parse: Callable[[Any], T]) -> Plan[T]:
    response = yield from exchange(request, policy)
    return read(response, parse)
