"""The retry rules on answers a real vpsnap rarely gives on demand (5xx, a key still in use, a
proxy's HTML page), through httpx's mock transport. Unit tests: no server."""

from __future__ import annotations

import email.utils
import json
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from vpsnap.client import (
    AsyncClient,
    Client,
    DatabaseUnavailable,
    IdempotencyKeyInUse,
    RetryPolicy,
    ServerError,
    UnexpectedResponse,
)
from vpsnap.client._http import send
from vpsnap.client._plan import ApiRequest, Send, Sleep
from vpsnap.client._runners import SyncRunner

FAST = RetryPolicy(attempts=4, backoff=0.001, max_backoff=0.002)
VPS = "vps_" + "1" * 26
OPERATION = {
    "operation": {
        "status": "queued",
        "jobId": "job_1",
        "pollUrl": "/api/jobs/job_1",
        "result": {"name": "a"},
    }
}


def problem(status: int, code: str) -> httpx.Response:
    body = {"code": code, "status": status, "title": code, "detail": code, "requestId": "req_1"}
    return httpx.Response(status, json=body, headers={"Content-Type": "application/problem+json"})


class Script:
    """Answers requests with the given responses in order, keeping what was sent."""

    def __init__(self, *answers: httpx.Response) -> None:
        self.answers = list(answers)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        request.read()
        self.requests.append(request)
        return self.answers.pop(0)


def test_a_post_answered_5xx_is_retried_with_the_same_key_and_bytes() -> None:
    script = Script(problem(503, "hypervisor_unavailable"), problem(500, "internal_error"))
    script.answers.append(httpx.Response(202, json=OPERATION))
    transport = httpx.MockTransport(script)
    with Client("http://vpsnap.test", "k", retry=FAST, transport=transport) as client:
        operation = client.snapshots.create(VPS, "a", description="d")
    assert operation.job_id == "job_1"
    assert len(script.requests) == 3
    keys = {r.headers["Idempotency-Key"] for r in script.requests}
    assert len(keys) == 1
    assert {r.content for r in script.requests} == {b'{"name":"a","description":"d"}'}


def test_a_key_still_in_use_is_waited_for() -> None:
    script = Script(problem(409, "idempotency_key_in_use"), httpx.Response(202, json=OPERATION))
    with Client("http://vpsnap.test", "k", retry=FAST, transport=httpx.MockTransport(script)) as c:
        c.snapshots.delete(VPS, "a")
    assert [r.method for r in script.requests] == ["DELETE", "DELETE"]
    assert (
        script.requests[0].headers["Idempotency-Key"]
        == script.requests[1].headers["Idempotency-Key"]
    )


def test_when_the_attempts_are_spent_the_last_answer_is_raised() -> None:
    script = Script(*(problem(409, "idempotency_key_in_use") for _ in range(4)))
    with (
        Client("http://vpsnap.test", "k", retry=FAST, transport=httpx.MockTransport(script)) as c,
        pytest.raises(IdempotencyKeyInUse) as in_use,
    ):
        c.snapshots.restore(VPS, "a")
    assert len(script.requests) == 4
    assert in_use.value.request_id == "req_1"


def test_a_request_without_a_key_is_not_repeated() -> None:
    script = Script(problem(503, "hypervisor_unavailable"))
    with httpx.Client(base_url="http://vpsnap.test", transport=httpx.MockTransport(script)) as h:
        response = SyncRunner(h, FAST).run(send(ApiRequest("POST", "/x", body=b"{}"), FAST))
    assert response.status_code == 503
    assert len(script.requests) == 1


def test_a_proxys_error_page_is_a_server_error() -> None:
    page = httpx.Response(502, text="<html>Bad Gateway</html>", headers={"X-Request-Id": "req_p"})
    script = Script(*(page for _ in range(4)))
    with (
        Client("http://vpsnap.test", "k", retry=FAST, transport=httpx.MockTransport(script)) as c,
        pytest.raises(ServerError) as failed,
    ):
        list(c.vps.list())
    assert (failed.value.status, failed.value.detail) == (502, "HTTP 502 Bad Gateway")
    assert failed.value.request_id == "req_p"


def test_an_answer_of_the_wrong_shape_is_reported_as_such() -> None:
    script = Script(httpx.Response(200, json={"unexpected": True}, headers={"X-Request-Id": "r"}))
    with (
        Client("http://vpsnap.test", "k", transport=httpx.MockTransport(script)) as client,
        pytest.raises(UnexpectedResponse) as odd,
    ):
        client.vps.get(VPS)
    assert "KeyError" in str(odd.value)
    assert odd.value.request_id == "r"


async def test_the_async_client_follows_the_same_rules() -> None:
    script = Script(problem(503, "hypervisor_unavailable"), httpx.Response(202, json=OPERATION))
    transport = httpx.MockTransport(script)
    async with AsyncClient("http://vpsnap.test", "k", retry=FAST, transport=transport) as client:
        operation = await client.snapshots.create(VPS, "a")
    assert operation.job_id == "job_1"
    assert len(script.requests) == 2
    assert json.loads(script.requests[1].content) == {"name": "a"}


def sleeps_before_answer(policy: RetryPolicy, *answers: httpx.Response) -> tuple[list[float], int]:
    """Drive the retry plan of a keyed POST over ``answers``: the sleeps it asked for, and the
    status of the answer it settled on."""
    plan = send(ApiRequest("POST", "/x", headers=(("Idempotency-Key", "k"),)), policy)
    sleeps: list[float] = []
    step = next(plan)
    replies = iter(answers)
    try:
        while True:
            step = plan.send(next(replies) if isinstance(step, Send) else None)
            if isinstance(step, Sleep):
                sleeps.append(step.seconds)
    except StopIteration as done:
        return sleeps, done.value.status_code


def unavailable(retry_after: str) -> httpx.Response:
    answer = problem(503, "database_unavailable")
    answer.headers["Retry-After"] = retry_after
    return answer


def test_a_5xx_with_retry_after_is_retried_no_sooner_than_the_server_asked() -> None:
    # Before, the SDK came back after its own backoff (0.25-0.5 s), well before the 2 s the
    # server's 503 database_unavailable asks for.
    policy = RetryPolicy(attempts=3, backoff=0.5, max_backoff=8.0)
    sleeps, status = sleeps_before_answer(
        policy, unavailable("2"), unavailable("3"), httpx.Response(202, json=OPERATION)
    )
    assert status == 202
    assert len(sleeps) == 2
    assert sleeps[0] >= 2.0
    assert sleeps[1] >= 3.0


def test_an_http_date_retry_after_is_read_too() -> None:
    when = email.utils.format_datetime(datetime.now(UTC) + timedelta(seconds=5), usegmt=True)
    sleeps, _ = sleeps_before_answer(
        RetryPolicy(attempts=2), unavailable(when), httpx.Response(202, json=OPERATION)
    )
    assert 3.0 <= sleeps[0] <= 5.0


def test_a_5xx_asking_for_longer_than_the_sdk_waits_is_raised_at_once() -> None:
    script = Script(unavailable("120"), httpx.Response(202, json=OPERATION))
    transport = httpx.MockTransport(script)
    policy = RetryPolicy(attempts=4, max_backoff=8.0)
    with (
        Client("http://vpsnap.test", "k", retry=policy, transport=transport) as client,
        pytest.raises(DatabaseUnavailable) as caught,
    ):
        client.snapshots.create(VPS, "a")
    assert len(script.requests) == 1
    assert caught.value.retry_after == 120


def test_an_unreadable_retry_after_falls_back_to_the_backoff() -> None:
    sleeps, status = sleeps_before_answer(
        RetryPolicy(attempts=2, backoff=0.001, max_backoff=0.002),
        unavailable("soon"),
        httpx.Response(202, json=OPERATION),
    )
    assert status == 202
    assert sleeps[0] <= 0.002
