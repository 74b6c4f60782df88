"""``Idempotency-Key`` (contract 6.2) through the real app, worker and qcow2 disks, on SQLite and
PostgreSQL: replay, reuse, in-flight, which answers are stored, expiry, per-account keys."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from starlette.middleware import Middleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from structlog.testing import capture_logs

from tests.conftest import Api, api_settings
from tests.support import ManualClock
from vpsnap.api.app import create_app
from vpsnap.api.edge import EdgeMiddleware
from vpsnap.api.idempotency import Authenticator, IdempotencyMiddleware
from vpsnap.demo import seed_demo
from vpsnap.domain.auth import Principal
from vpsnap.domain.errors import HypervisorError, Unauthorized
from vpsnap.domain.idempotency import RECORD_LIFETIME
from vpsnap.drivers.qemu_img import QemuImg
from vpsnap.runtime import Runtime, qemu_img_for
from vpsnap.services.idempotency import IdempotencyService
from vpsnap.services.snapshots import SnapshotService
from vpsnap.store.sql import SqlStore

pytestmark = pytest.mark.qemu

REPLAYED = "idempotent-replayed"


class Gate:
    """Holds requests that carry ``X-Test-Hold`` until the test opens it.

    Installed between the idempotency middleware and the routes, so a held request has claimed
    its key (``in_flight``) and has not reached its handler: the test knows, without sleeping,
    that the first request is still being handled while it sends the retry.
    """

    def __init__(self) -> None:
        self.entered = asyncio.Event()
        self.opened = asyncio.Event()


class GateMiddleware:
    def __init__(self, app: ASGIApp, *, gate: Gate) -> None:
        self.app = app
        self.gate = gate

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and any(k == b"x-test-hold" for k, _ in scope["headers"]):
            self.gate.entered.set()
            await self.gate.opened.wait()
        await self.app(scope, receive, send)


def install(
    app: FastAPI, service: IdempotencyService, credentials: Authenticator, gate: Gate
) -> None:
    """Put the idempotency middleware right inside the edge, as ``create_app`` is to do.

    ``user_middleware[0]`` is the outermost layer (``add_middleware`` inserts at 0), so this
    is what adding ``IdempotencyMiddleware`` just *before* ``EdgeMiddleware`` in ``create_app``
    produces. One already wired there is replaced, so that this module's clock is the one used.
    """
    stack = [m for m in app.user_middleware if m.cls is not IdempotencyMiddleware]
    edge = next(i for i, m in enumerate(stack) if m.cls is EdgeMiddleware)
    stack[edge + 1 : edge + 1] = [
        Middleware(IdempotencyMiddleware, service=service, credentials=credentials),
        Middleware(GateMiddleware, gate=gate),
    ]
    app.user_middleware[:] = stack


@dataclass
class IdemApi(Api):
    clock: ManualClock
    service: IdempotencyService
    gate: Gate

    def path(self, vps: str = "demo-web", rest: str = "") -> str:
        return f"/api/v2/vps/{self.vps_ids[vps]}/snapshots{rest}"

    def keyed(self, key: str, token: str = "full", **extra: str) -> dict[str, str]:
        return {**self.auth(token), "Idempotency-Key": key, **extra}

    async def snapshot_names(self, vps: str = "demo-web") -> tuple[list[str], list[str]]:
        """What the database and the disk hold, once every job of the VPS has finished."""
        listing = (await self.client.get(self.path(vps), headers=self.auth())).json()
        on_disk = [s.name for s in (await QemuImg().info(self.disk(vps))).snapshots]
        return sorted(s["name"] for s in listing["data"]), sorted(on_disk)

    async def jobs_of(self, vps: str, name: str) -> list[str]:
        async with self.runtime.store.transaction(read_only=True) as tx:
            jobs = await tx.jobs_for_snapshot(self.vps_ids[vps], name)
        return [job.type.value for job in jobs]


@pytest.fixture
async def api(
    store: SqlStore, tmp_path: Path, api_overrides: dict[str, object]
) -> AsyncIterator[IdemApi]:
    """The suite's ``api`` (``tests/conftest.py``), plus the idempotency middleware on a clock
    the tests move, and the gate."""
    settings = api_settings(tmp_path, **api_overrides)
    runtime = Runtime.build(settings, store=store)
    await runtime.prepare()
    tokens = await seed_demo(
        runtime, qemu_img_for(settings), disk_bytes=64 * 1024**2, data_bytes=1024**2
    )
    vps_ids = {vps.name: vps.id for vps, _ in await runtime.services.accounts.list_vps()}
    clock = ManualClock(datetime.now(UTC))
    service = IdempotencyService(store, clock)
    gate = Gate()
    app = create_app(runtime.services, settings)
    install(app, service, runtime.services.credentials, gate)
    worker = runtime.worker()
    worker_task = asyncio.create_task(worker.run())
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        yield IdemApi(client, runtime, tokens, vps_ids, tmp_path, clock, service, gate)
    worker.stop()
    await worker_task


def assert_problem(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = response.json()
    assert body["code"] == code
    assert REPLAYED not in response.headers
    return body


def job_id(response: httpx.Response) -> str:
    value: str = response.json()["operation"]["jobId"]
    return value


# -- replay -----------------------------------------------------------------------------------


async def test_a_retried_create_is_replayed_and_snapshots_once(api: IdemApi) -> None:
    body = {"name": "before-upgrade", "description": "Before package upgrade"}
    first = await api.client.post(api.path(), json=body, headers=api.keyed("create-1"))
    second = await api.client.post(api.path(), json=body, headers=api.keyed("create-1"))

    assert first.status_code == second.status_code == 202
    assert REPLAYED not in first.headers
    assert second.headers[REPLAYED] == "true"
    assert second.content == first.content  # byte for byte: the same job
    assert job_id(second) == job_id(first)
    assert second.headers["location"] == first.headers["location"] == f"/api/jobs/{job_id(first)}"
    assert second.headers["content-type"] == first.headers["content-type"]
    assert second.headers["content-length"] == str(len(first.content))
    # The edge's headers belong to the retry itself.
    assert second.headers["x-request-id"] != first.headers["x-request-id"]
    assert second.headers["x-request-id"].startswith("req_")
    assert int(second.headers["x-ratelimit-remaining"]) < int(
        first.headers["x-ratelimit-remaining"]
    )

    job = await api.wait_job(job_id(first))
    assert job["status"] == "completed", job
    third = await api.client.post(api.path(), json=body, headers=api.keyed("create-1"))
    assert third.content == first.content  # still the first answer ("queued"), not a new one
    assert await api.snapshot_names() == (["before-upgrade"], ["before-upgrade"])
    assert await api.jobs_of("demo-web", "before-upgrade") == ["snapshot.create"]


async def test_a_retried_delete_is_replayed_and_deletes_once(api: IdemApi) -> None:
    created = await api.client.post(api.path(), json={"name": "old"}, headers=api.auth())
    await api.wait_job(job_id(created))

    first = await api.client.delete(api.path(rest="/old"), headers=api.keyed("delete-1"))
    second = await api.client.delete(api.path(rest="/old"), headers=api.keyed("delete-1"))

    assert first.status_code == second.status_code == 202
    assert second.headers[REPLAYED] == "true"
    assert job_id(second) == job_id(first)
    assert (await api.wait_job(job_id(first)))["status"] == "completed"
    # After the deletion a real second DELETE would be 404: the key still gives the answer.
    third = await api.client.delete(api.path(rest="/old"), headers=api.keyed("delete-1"))
    assert third.status_code == 202
    assert third.content == first.content
    assert await api.jobs_of("demo-web", "old") == ["snapshot.create", "snapshot.delete"]
    assert await api.snapshot_names() == ([], [])


async def test_a_retried_restore_without_body_is_replayed_and_restores_once(api: IdemApi) -> None:
    created = await api.client.post(api.path(), json={"name": "base"}, headers=api.auth())
    await api.wait_job(job_id(created))
    path = api.path(rest="/base/actions/restore")

    first = await api.client.post(path, headers=api.keyed("restore-1"))
    second = await api.client.post(path, headers=api.keyed("restore-1"))

    assert first.status_code == second.status_code == 202
    assert second.headers[REPLAYED] == "true"
    assert job_id(second) == job_id(first)
    assert (await api.wait_job(job_id(first)))["status"] == "completed"
    assert await api.jobs_of("demo-web", "base") == ["snapshot.create", "snapshot.restore"]


# -- another request under a used key ----------------------------------------------------------


async def test_the_same_key_for_another_request_is_reused(api: IdemApi) -> None:
    first = await api.client.post(api.path(), json={"name": "one"}, headers=api.keyed("k"))
    assert first.status_code == 202

    other_body = await api.client.post(api.path(), json={"name": "two"}, headers=api.keyed("k"))
    other_path = await api.client.post(
        api.path("demo-db"), json={"name": "one"}, headers=api.keyed("k")
    )
    other_method = await api.client.delete(api.path(rest="/one"), headers=api.keyed("k"))
    other_query = await api.client.post(
        api.path() + "?x=1", json={"name": "one"}, headers=api.keyed("k")
    )

    for response in (other_body, other_path, other_method, other_query):
        body = assert_problem(response, 422, "idempotency_key_reused")
        assert body["instance"] == response.request.url.path
    # Nothing of those ran, and the first answer is still there for its own request.
    replay = await api.client.post(api.path(), json={"name": "one"}, headers=api.keyed("k"))
    assert replay.headers[REPLAYED] == "true"
    assert job_id(replay) == job_id(first)
    await api.wait_job(job_id(first))
    assert await api.snapshot_names() == (["one"], ["one"])
    assert await api.snapshot_names("demo-db") == ([], [])


async def test_while_the_first_is_handled_a_retry_is_in_use(api: IdemApi) -> None:
    body = {"name": "slow"}
    first = asyncio.create_task(
        api.client.post(api.path(), json=body, headers=api.keyed("slow-1", **{"X-Test-Hold": "1"}))
    )
    await asyncio.wait_for(api.gate.entered.wait(), timeout=10)

    retry = await api.client.post(api.path(), json=body, headers=api.keyed("slow-1"))
    other = await api.client.post(api.path(), json={"name": "x"}, headers=api.keyed("slow-1"))

    assert_problem(retry, 409, "idempotency_key_in_use")
    assert_problem(other, 422, "idempotency_key_reused")
    assert not first.done()
    api.gate.opened.set()
    answered = await first
    assert answered.status_code == 202
    replay = await api.client.post(api.path(), json=body, headers=api.keyed("slow-1"))
    assert replay.headers[REPLAYED] == "true"
    assert replay.content == answered.content
    await api.wait_job(job_id(answered))
    assert await api.snapshot_names() == (["slow"], ["slow"])


# -- which answers are stored -----------------------------------------------------------------


async def test_a_refusal_is_replayed_even_after_the_situation_changed(api: IdemApi) -> None:
    taken = await api.client.post(api.path("demo-db"), json={"name": "a"}, headers=api.auth())
    await api.wait_job(job_id(taken))  # demo-db's only slot is used now

    refused = await api.client.post(
        api.path("demo-db"), json={"name": "b"}, headers=api.keyed("full-1")
    )
    body = assert_problem(refused, 409, "snapshot_limit_reached")
    assert body["extensions"] == {"totalSnapshots": 1, "usedSnapshots": 1}

    freed = await api.client.delete(api.path("demo-db", "/a"), headers=api.auth())
    await api.wait_job(job_id(freed))
    again = await api.client.post(
        api.path("demo-db"), json={"name": "b"}, headers=api.keyed("full-1")
    )
    assert again.status_code == 409
    assert again.headers[REPLAYED] == "true"
    assert again.headers["content-type"] == "application/problem+json"
    assert again.content == refused.content  # requestId and timestamp of the first answer
    assert again.json()["requestId"] != again.headers["x-request-id"]

    fresh = await api.client.post(
        api.path("demo-db"), json={"name": "b"}, headers=api.keyed("full-2")
    )
    assert fresh.status_code == 202


async def test_a_validation_error_is_replayed(api: IdemApi) -> None:
    body = {"name": "ok", "nmae": "typo"}
    first = await api.client.post(api.path(), json=body, headers=api.keyed("typo"))
    second = await api.client.post(api.path(), json=body, headers=api.keyed("typo"))

    assert_problem(first, 400, "invalid_request")
    assert second.status_code == 400
    assert second.headers[REPLAYED] == "true"
    assert second.content == first.content


@pytest.mark.parametrize(
    ("error", "status", "code"),
    [
        (RuntimeError("the database went away"), 500, "internal_error"),
        (HypervisorError("qemu-img is gone"), 503, "hypervisor_unavailable"),
    ],
    ids=["crash-500", "problem-503"],
)
async def test_a_server_failure_is_not_stored_so_a_retry_really_runs(
    api: IdemApi,
    monkeypatch: pytest.MonkeyPatch,
    error: Exception,
    status: int,
    code: str,
) -> None:
    # The first create fails inside the real route (a raised exception for the 500, a
    # DomainError turned into a 503 problem for the other); every later one works.
    original: Callable[..., Awaitable[Any]] = SnapshotService.create
    failures = [error]

    async def create_failing_once(self: SnapshotService, *args: Any, **kwargs: Any) -> Any:
        if failures:
            raise failures.pop()
        return await original(self, *args, **kwargs)

    monkeypatch.setattr(SnapshotService, "create", create_failing_once)
    body = {"name": "retry-me"}

    # Captured, not rendered: the console renderer would spend seconds on the traceback.
    with capture_logs() as logs:
        failed = await api.client.post(api.path(), json=body, headers=api.keyed("fail-1"))
    crashed = [e for e in logs if e["event"] == "request_crashed"]
    assert len(crashed) == (1 if status == 500 else 0)
    retried = await api.client.post(api.path(), json=body, headers=api.keyed("fail-1"))

    assert_problem(failed, status, code)
    assert retried.status_code == 202
    assert REPLAYED not in retried.headers
    again = await api.client.post(api.path(), json=body, headers=api.keyed("fail-1"))
    assert again.headers[REPLAYED] == "true"
    assert job_id(again) == job_id(retried)
    await api.wait_job(job_id(retried))
    assert await api.snapshot_names() == (["retry-me"], ["retry-me"])


# A 2 s window: short to wait out, long enough that the two calls surely share it.
@pytest.mark.parametrize(
    "api_overrides", [{"rate_limit_snapshot_mutations_per_vps": "1/2 seconds"}]
)
async def test_a_rate_limited_answer_is_not_stored(api: IdemApi) -> None:
    spent = await api.client.post(api.path(), json={"name": "a"}, headers=api.auth())
    assert spent.status_code == 202
    limited = await api.client.post(api.path(), json={"name": "b"}, headers=api.keyed("rl-1"))
    assert_problem(limited, 429, "rate_limited")

    await asyncio.sleep(int(limited.headers["retry-after"]))
    retried = await api.client.post(api.path(), json={"name": "b"}, headers=api.keyed("rl-1"))

    assert retried.status_code == 202  # ran for real, not the stored 429
    assert REPLAYED not in retried.headers
    replay = await api.client.post(api.path(), json={"name": "b"}, headers=api.keyed("rl-1"))
    assert replay.headers[REPLAYED] == "true"
    assert replay.content == retried.content


async def test_a_missing_scope_is_not_stored_so_another_key_of_the_account_may_retry(
    api: IdemApi,
) -> None:
    body = {"name": "scoped"}
    forbidden = await api.client.post(
        api.path(), json=body, headers=api.keyed("scope-1", token="readonly")
    )
    allowed = await api.client.post(api.path(), json=body, headers=api.keyed("scope-1"))

    assert_problem(forbidden, 403, "forbidden")
    assert allowed.status_code == 202
    assert REPLAYED not in allowed.headers
    # Keys are per account, not per API key: the read-only key now gets the stored answer.
    replay = await api.client.post(
        api.path(), json=body, headers=api.keyed("scope-1", token="readonly")
    )
    assert replay.headers[REPLAYED] == "true"
    assert job_id(replay) == job_id(allowed)


# -- scope of the keys ------------------------------------------------------------------------


async def account_id(api: IdemApi, token: str = "full") -> str:
    principal = await api.runtime.services.credentials.authenticate(api.tokens[token])
    return principal.account_id


async def test_keys_are_per_account(api: IdemApi) -> None:
    mine = await api.client.post(api.path(), json={"name": "same"}, headers=api.keyed("shared"))
    theirs = await api.client.post(
        api.path("other-web"), json={"name": "same"}, headers=api.keyed("shared", token="other")
    )

    assert mine.status_code == theirs.status_code == 202
    assert REPLAYED not in theirs.headers
    assert job_id(theirs) != job_id(mine)
    # Each account replays its own answer.
    for token, vps, first in (("full", "demo-web", mine), ("other", "other-web", theirs)):
        replay = await api.client.post(
            api.path(vps), json={"name": "same"}, headers=api.keyed("shared", token=token)
        )
        assert replay.headers[REPLAYED] == "true"
        assert replay.content == first.content


async def test_reads_and_unauthenticated_calls_are_untouched(api: IdemApi) -> None:
    for _ in range(2):
        listed = await api.client.get(api.path(), headers=api.keyed("read-1"))
        assert listed.status_code == 200
        assert REPLAYED not in listed.headers
    head = await api.client.head("/healthz", headers={"Idempotency-Key": "read-1"})
    assert REPLAYED not in head.headers
    # The key is still unused: reads never claim it.
    created = await api.client.post(api.path(), json={"name": "a"}, headers=api.keyed("read-1"))
    assert created.status_code == 202
    assert REPLAYED not in created.headers

    # Without a valid credential there is no key space: the usual 401, even for a bad key.
    for headers in (
        {"Idempotency-Key": "read-1"},
        {"Idempotency-Key": "k" * 300},
        {"Idempotency-Key": "read-1", "Authorization": "Bearer vpsnap_nonsense"},
    ):
        response = await api.client.post(api.path(), json={"name": "a"}, headers=headers)
        assert_problem(response, 401, "unauthorized")


# -- expiry -----------------------------------------------------------------------------------


async def test_an_expired_key_is_new_and_old_records_are_purged(api: IdemApi) -> None:
    first = await api.client.post(api.path(), json={"name": "day-1"}, headers=api.keyed("daily"))
    assert first.status_code == 202

    api.clock.advance(seconds=RECORD_LIFETIME.total_seconds() - 1)
    replay = await api.client.post(api.path(), json={"name": "day-1"}, headers=api.keyed("daily"))
    assert replay.headers[REPLAYED] == "true"

    api.clock.advance(seconds=1)
    second = await api.client.post(api.path(), json={"name": "day-2"}, headers=api.keyed("daily"))
    assert second.status_code == 202
    assert REPLAYED not in second.headers
    assert job_id(second) != job_id(first)
    # The key now belongs to the new request.
    old = await api.client.post(api.path(), json={"name": "day-1"}, headers=api.keyed("daily"))
    assert_problem(old, 422, "idempotency_key_reused")

    owner = await account_id(api)
    assert await api.service.purge_expired() == 0
    api.clock.advance(hours=24)
    assert await api.service.purge_expired() == 1
    async with api.runtime.store.transaction(read_only=True) as tx:
        assert await tx.get_idempotency(owner, "daily") is None


# -- the header itself ------------------------------------------------------------------------


def raw_auth(api: IdemApi) -> list[tuple[bytes, bytes]]:
    return [(name.encode(), value.encode()) for name, value in api.auth().items()]


@pytest.mark.parametrize(
    ("key", "field_code"),
    [
        ("k" * 256, "too_long"),
        ("ключ".encode(), "invalid_format"),
        ("two words", "invalid_format"),
        ("", "invalid_format"),
    ],
    ids=["too-long", "non-ascii", "space", "empty"],
)
async def test_an_invalid_key_is_400_pointing_at_the_header(
    api: IdemApi, key: str | bytes, field_code: str
) -> None:
    raw = key.encode("latin-1") if isinstance(key, str) else key
    headers = [*raw_auth(api), (b"Idempotency-Key", raw)]
    response = await api.client.post(api.path(), json={"name": "a"}, headers=headers)

    body = assert_problem(response, 400, "invalid_request")
    [error] = body["errors"]
    assert error["pointer"] == "/headers/Idempotency-Key"
    assert error["code"] == field_code
    assert (await api.snapshot_names()) == ([], [])


async def test_the_key_is_sent_once(api: IdemApi) -> None:
    headers = [*raw_auth(api), (b"Idempotency-Key", b"a"), (b"Idempotency-Key", b"b")]
    response = await api.client.post(api.path(), json={"name": "a"}, headers=headers)
    assert_problem(response, 400, "invalid_request")


async def test_the_longest_key_is_accepted(api: IdemApi) -> None:
    key = "~" * 255
    first = await api.client.post(api.path(), json={"name": "a"}, headers=api.keyed(key))
    second = await api.client.post(api.path(), json={"name": "a"}, headers=api.keyed(key))
    assert first.status_code == 202
    assert second.headers[REPLAYED] == "true"


async def test_the_edge_limits_apply_first_and_claim_nothing(api: IdemApi) -> None:
    big = b'{"name": "x", "description": "' + b"a" * 70_000 + b'"}'
    too_large = await api.client.post(
        api.path(),
        content=big,
        headers={**api.keyed("big-1"), "Content-Type": "application/json"},
    )
    assert_problem(too_large, 413, "payload_too_large")
    assert too_large.headers["x-request-id"].startswith("req_")

    fitting = await api.client.post(api.path(), json={"name": "x"}, headers=api.keyed("big-1"))
    assert fitting.status_code == 202
    assert REPLAYED not in fitting.headers


# -- the middleware on its own: ASGI mechanics with a stub app ----------------------------------

OWNER = "acct_01hxa3b4c5d6e7f8g9h0j1k2m3"


class OneAccount:
    async def authenticate(self, secret: str) -> Principal:
        if secret != "good":
            raise Unauthorized("no")
        return Principal(OWNER, frozenset())


def asgi_request(
    key: str = "k", chunks: tuple[bytes, ...] = (b'{"a":', b"1}")
) -> tuple[Scope, Receive]:
    scope: Scope = {
        "type": "http",
        "method": "POST",
        "path": "/things",
        "query_string": b"",
        "headers": [(b"authorization", b"Bearer good"), (b"idempotency-key", key.encode())],
        "state": {},
    }
    messages: list[Message] = [
        {"type": "http.request", "body": chunk, "more_body": i < len(chunks) - 1}
        for i, chunk in enumerate(chunks)
    ]

    async def receive() -> Message:
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    return scope, receive


async def record_state(store: SqlStore, key: str = "k") -> str | None:
    async with store.transaction(read_only=True) as tx:
        record = await tx.get_idempotency(OWNER, key)
    return record.state.value if record else None


@pytest.fixture
def stub_service(store: SqlStore) -> IdempotencyService:
    return IdempotencyService(store, ManualClock(datetime.now(UTC)))


async def test_the_answer_is_stored_before_the_client_sees_it(
    store: SqlStore, stub_service: IdempotencyService
) -> None:
    bodies: list[bytes] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        # The body arrives whole, however it was chunked.
        bodies.append((await receive())["body"])
        await send({"type": "http.response.start", "status": 201, "headers": []})
        await send({"type": "http.response.body", "body": b"{}", "more_body": True})
        await send({"type": "http.response.body", "body": b"\n"})

    seen: list[tuple[str, str | None]] = []

    async def send(message: Message) -> None:
        seen.append((message["type"], await record_state(store)))

    middleware = IdempotencyMiddleware(app, service=stub_service, credentials=OneAccount())
    await middleware(*asgi_request(), send)

    assert bodies == [b'{"a":1}']
    assert seen == [
        ("http.response.start", "done"),
        ("http.response.body", "done"),
        ("http.response.body", "done"),
    ]


async def test_an_answer_sent_before_a_later_failure_is_delivered_and_stored(
    store: SqlStore, stub_service: IdempotencyService
) -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 202, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})
        raise RuntimeError("a background task failed after the answer")

    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)

    middleware = IdempotencyMiddleware(app, service=stub_service, credentials=OneAccount())
    with pytest.raises(RuntimeError):
        await middleware(*asgi_request(), send)

    assert [m["type"] for m in sent] == ["http.response.start", "http.response.body"]
    assert await record_state(store) == "done"


async def test_a_crash_before_the_answer_frees_the_key(
    store: SqlStore, stub_service: IdempotencyService
) -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 202, "headers": []})
        raise RuntimeError("crashed mid-answer")

    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)

    middleware = IdempotencyMiddleware(app, service=stub_service, credentials=OneAccount())
    with pytest.raises(RuntimeError):
        await middleware(*asgi_request(), send)

    assert sent == []  # held back: the edge answers 500 instead of half an answer
    assert await record_state(store) is None


async def test_a_huge_answer_streams_through_and_is_not_stored(
    store: SqlStore, stub_service: IdempotencyService
) -> None:
    chunk = b"x" * (256 * 1024)

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        for _ in range(7):
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b""})

    received: list[int] = []

    async def send(message: Message) -> None:
        if message["type"] == "http.response.body":
            received.append(len(message["body"]))

    middleware = IdempotencyMiddleware(app, service=stub_service, credentials=OneAccount())
    await middleware(*asgi_request(), send)

    assert sum(received) == 7 * len(chunk)
    assert await record_state(store) is None


async def test_a_client_gone_before_its_body_ended_claims_nothing(
    store: SqlStore, stub_service: IdempotencyService
) -> None:
    scope, _ = asgi_request()
    messages: list[Message] = [
        {"type": "http.request", "body": b'{"a":', "more_body": True},
        {"type": "http.disconnect"},
    ]

    async def receive() -> Message:
        return messages.pop(0)

    got: list[Message] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        got.append(await receive())
        got.append(await receive())

    async def send(message: Message) -> None:
        raise AssertionError("nothing is sent to a client that left")

    middleware = IdempotencyMiddleware(app, service=stub_service, credentials=OneAccount())
    await middleware(scope, receive, send)

    assert [m["type"] for m in got] == ["http.request", "http.disconnect"]
    assert await record_state(store) is None
