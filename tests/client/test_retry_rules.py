"""The retry rules on answers a real vpsnap rarely gives on demand (5xx, a key still in use, a
proxy's HTML page), through httpx's mock transport. Unit tests: no server."""

from __future__ import annotations

import json

import httpx
import pytest

from vpsnap.client import (
    AsyncClient,
    Client,
    IdempotencyKeyInUse,
    RetryPolicy,
    ServerError,
    UnexpectedResponse,
)
from vpsnap.client._http import send
from vpsnap.client._plan import ApiRequest
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
