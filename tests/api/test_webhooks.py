"""Job and snapshot events by webhook, end to end: the real app, real qcow2 disks, the worker's
transactions, the outbox dispatcher, and a real receiver on 127.0.0.1 that verifies every
signature with the ``standardwebhooks`` library."""

from __future__ import annotations

import asyncio
import subprocess
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tests.conftest import Api
from tests.webhook_receiver import running_receiver
from vpsnap.domain.webhooks import MessageState
from vpsnap.events.addresses import AddressPolicy
from vpsnap.events.delivery import WebhookDispatcher, WebhookSender
from vpsnap.scheduler.retention import sweep_expired
from vpsnap.store.sql import SqlTransaction

pytestmark = pytest.mark.qemu

ALL_EVENTS = {
    "job.completed",
    "job.failed",
    "snapshot.created",
    "snapshot.restored",
    "snapshot.deleted",
    "snapshot.expired",
}


@pytest.fixture
def api_overrides() -> dict[str, object]:
    return {
        "webhook_allowed_networks": ["127.0.0.1/32"],
        "webhook_retry_base_seconds": 0.05,
        "webhook_retry_max_seconds": 0.2,
        "webhook_timeout_seconds": 2.0,
    }


@pytest.fixture
def api_worker() -> bool:
    return False  # jobs are run one by one with run_one, so failures surface in the test


class FutureClock:
    def __init__(self, ahead: timedelta) -> None:
        self.ahead = ahead

    def now(self) -> datetime:
        return datetime.now(UTC) + self.ahead


async def register(api: Api, url: str, token: str = "full", **extra: Any) -> dict[str, Any]:
    response = await api.client.post(
        "/api/v2/webhooks", json={"url": url, **extra}, headers=api.auth(token)
    )
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


async def run_jobs(api: Api) -> None:
    worker = api.runtime.worker()
    while await worker.run_one():
        pass


async def deliver(api: Api, dispatcher: WebhookDispatcher | None = None) -> int:
    return await (dispatcher or api.runtime.webhook_dispatcher()).deliver_due()


async def queue(api: Api, method: str, path: str, body: Any = None) -> None:
    response = await api.client.request(method, path, json=body, headers=api.auth())
    assert response.status_code == 202, response.text


async def outbox(api: Api, state: MessageState) -> int:
    async with api.runtime.store.transaction(read_only=True) as tx:
        return await tx.count_webhook_messages(state)


async def test_each_event_is_delivered_once_signed(api: Api) -> None:
    vps_id = api.vps_ids["demo-web"]
    snapshots = f"/api/v2/vps/{vps_id}/snapshots"
    async with running_receiver() as receiver:
        endpoint = await register(api, receiver.url, description="everything")
        assert endpoint["secret"].startswith("whsec_")
        assert set(endpoint["eventTypes"]) == ALL_EVENTS

        await queue(api, "POST", snapshots, {"name": "keep"})
        await queue(api, "POST", snapshots, {"name": "short-lived"})
        await run_jobs(api)
        await queue(api, "POST", f"{snapshots}/keep/actions/restore")
        await queue(api, "DELETE", f"{snapshots}/keep")
        await run_jobs(api)
        expired = await sweep_expired(
            api.runtime.store, api.runtime.events, FutureClock(timedelta(days=2))
        )
        assert len(expired) == 1
        # A snapshot of this name that vpsnap did not make: the create fails.
        await asyncio.to_thread(
            subprocess.run,
            ["qemu-img", "snapshot", "-c", "taken", str(api.disk("demo-web"))],
            check=True,
        )
        await queue(api, "POST", snapshots, {"name": "taken"})
        await run_jobs(api)

        assert await deliver(api) == 11
        assert await deliver(api) == 0  # nothing is sent twice

        for request in receiver.received:
            request.verified(endpoint["secret"])  # raises unless the signature is right
            assert not request.verifies("whsec_" + "A" * 32)
            assert request.path == "/hooks/vpsnap"
            assert request.headers["content-type"] == "application/json"
        ids = [r.message_id for r in receiver.received]
        assert len(ids) == len(set(ids)) == 11
        assert Counter(receiver.types()) == {
            "job.completed": 5,
            "snapshot.created": 2,
            "snapshot.restored": 1,
            "snapshot.deleted": 1,
            "snapshot.expired": 1,
            "job.failed": 1,
        }
        by_type = {r.payload()["type"]: r.payload() for r in receiver.received}
        restored = by_type["snapshot.restored"]["data"]
        assert restored["snapshot"]["name"] == "keep"
        assert restored["vps"] == {"id": vps_id, "name": "demo-web"}
        deleted = by_type["snapshot.deleted"]["data"]
        assert deleted["snapshot"]["name"] == "keep"
        assert by_type["snapshot.expired"]["data"]["snapshot"]["name"] == "short-lived"
        failed = by_type["job.failed"]["data"]["job"]
        assert failed["status"] == "failed"
        assert failed["error"]["code"] == "snapshot_name_taken"
        assert failed["createdBy"]["kind"] == "api_key"
        assert by_type["job.failed"]["timestamp"].endswith("Z")
        assert await outbox(api, MessageState.DELIVERED) == 11


async def test_a_filter_limits_what_an_endpoint_receives(api: Api) -> None:
    vps_id = api.vps_ids["demo-web"]
    async with running_receiver() as only_failures, running_receiver() as other_account:
        await register(api, only_failures.url, eventTypes=["job.failed"])
        await register(api, other_account.url, token="other")
        await queue(api, "POST", f"/api/v2/vps/{vps_id}/snapshots", {"name": "fine"})
        await run_jobs(api)
        await deliver(api)
        assert only_failures.received == []  # a completed job is not what it asked for
        assert other_account.received == []  # nor another account's events


async def test_retries_after_two_errors_then_delivers(api: Api) -> None:
    async with running_receiver(statuses=[500, 500]) as receiver:
        endpoint = await register(api, receiver.url)
        response = await api.client.post(
            f"/api/v2/webhooks/{endpoint['id']}/actions/test", headers=api.auth()
        )
        assert response.status_code == 202
        message_id = response.json()["messageId"]
        for _ in range(100):
            await deliver(api)
            if receiver.delivered():
                break
            await asyncio.sleep(0.05)
        assert [r.answered for r in receiver.received] == [500, 500, 204]
        assert {r.message_id for r in receiver.received} == {message_id}  # one webhook-id
        for request in receiver.received:
            assert request.verified(endpoint["secret"])["type"] == "webhook.test"
        deliveries = (
            await api.client.get(
                f"/api/v2/webhooks/{endpoint['id']}/deliveries", headers=api.auth()
            )
        ).json()["data"]
        assert [(d["attempt"], d["outcome"], d["statusCode"]) for d in deliveries] == [
            (3, "delivered", 204),
            (2, "failed", 500),
            (1, "failed", 500),
        ]
        assert {d["messageId"] for d in deliveries} == {message_id}
        assert deliveries[1]["error"] == "HTTP 500"
        shown = (
            await api.client.get(f"/api/v2/webhooks/{endpoint['id']}", headers=api.auth())
        ).json()
        assert shown["lastSuccessAt"] is not None
        assert shown["lastFailureAt"] is not None
        assert shown["enabled"] is True


async def test_nothing_is_sent_for_a_rolled_back_job_end(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    vps_id = api.vps_ids["demo-web"]
    async with running_receiver() as receiver:
        await register(api, receiver.url)
        await queue(api, "POST", f"/api/v2/vps/{vps_id}/snapshots", {"name": "doomed"})
        original = SqlTransaction.add_webhook_message

        async def then_fail(self: SqlTransaction, message: Any) -> None:
            await original(self, message)
            raise RuntimeError("the database went away after the outbox insert")

        monkeypatch.setattr(SqlTransaction, "add_webhook_message", then_fail)
        worker = api.runtime.worker()
        with pytest.raises(RuntimeError):
            await worker.run_one()
        monkeypatch.undo()
        # The job's end was rolled back, and its events with it.
        assert await outbox(api, MessageState.PENDING) == 0
        assert await deliver(api) == 0
        assert receiver.received == []
        # The job is still the worker's (in progress); once its lease is given back and it
        # runs again, its end commits with its events, once.
        async with api.runtime.store.transaction() as tx:
            assert await tx.requeue_orphaned(None, None)
        await run_jobs(api)
        await deliver(api)
        assert Counter(receiver.types()) == {"job.completed": 1, "snapshot.created": 1}


async def test_an_endpoint_failing_a_whole_window_is_disabled_and_audited(api: Api) -> None:
    async with running_receiver(default=503) as receiver:
        endpoint = await register(api, receiver.url)
        base = api.runtime.webhook_dispatcher()
        retry = base.retry.__class__(
            base=timedelta(milliseconds=20),
            cap=timedelta(milliseconds=50),
            window=timedelta(seconds=0.4),
        )
        dispatcher = WebhookDispatcher(base.store, base.clock, base.sender, retry)
        for path in ("actions/test", "actions/test"):
            await api.client.post(f"/api/v2/webhooks/{endpoint['id']}/{path}", headers=api.auth())
        deadline = asyncio.get_running_loop().time() + 10
        while (
            await outbox(api, MessageState.PENDING) and asyncio.get_running_loop().time() < deadline
        ):
            await deliver(api, dispatcher)
            await asyncio.sleep(0.03)
        shown = (
            await api.client.get(f"/api/v2/webhooks/{endpoint['id']}", headers=api.auth())
        ).json()
        assert shown["enabled"] is False
        assert "every delivery failed" in shown["disabledReason"]
        assert await outbox(api, MessageState.FAILED) == 2
        assert len(receiver.received) >= 2
        events = (
            await api.client.get(
                "/api/v2/audit-events", params={"action": "webhook.disable"}, headers=api.auth()
            )
        ).json()["data"]
        assert len(events) == 1
        assert events[0]["actor"]["kind"] == "scheduler"
        assert events[0]["target"] == {"type": "webhook", "id": endpoint["id"]}
        # A disabled endpoint receives nothing more.
        before = len(receiver.received)
        await api.client.post(f"/api/v2/webhooks/{endpoint['id']}/actions/test", headers=api.auth())
        await deliver(api, dispatcher)
        assert len(receiver.received) == before


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:9/hook",
        "http://localhost:9/hook",
        "http://[::1]:9/hook",
        "http://[::ffff:127.0.0.1]:9/hook",
        "http://169.254.169.254/latest/meta-data",
        "http://10.1.2.3/hook",
        "http://192.168.0.10/hook",
        "http://100.64.0.1/hook",
        "http://0.0.0.0/hook",
        "http://name.invalid/hook",
        "ftp://example.com/hook",
        "http://user:pass@example.com/hook",
        "not a url",
    ],
)
async def test_urls_that_reach_the_servers_network_are_refused(api: Api, url: str) -> None:
    # This server allows 127.0.0.1/32 only (also written as ::ffff:127.0.0.1): everything
    # else internal stays refused.
    allowed = url.startswith(("http://127.0.0.1", "http://localhost", "http://[::ffff:127"))
    response = await api.client.post("/api/v2/webhooks", json={"url": url}, headers=api.auth())
    if allowed:
        assert response.status_code == 201, response.text
        return
    assert response.status_code == 400, response.text
    body = response.json()
    assert body["code"] == "invalid_request"
    assert body["errors"][0]["pointer"] == "/url"


async def test_the_check_is_repeated_at_delivery(api: Api) -> None:
    async with running_receiver() as receiver:
        endpoint = await register(api, receiver.url)
        await api.client.post(f"/api/v2/webhooks/{endpoint['id']}/actions/test", headers=api.auth())
        base = api.runtime.webhook_dispatcher()
        strict = WebhookDispatcher(
            base.store, base.clock, WebhookSender(AddressPolicy(), timeout=2)
        )
        await deliver(api, strict)
        assert receiver.received == []  # never connected
        [attempt] = (
            await api.client.get(
                f"/api/v2/webhooks/{endpoint['id']}/deliveries", headers=api.auth()
            )
        ).json()["data"]
        assert attempt["outcome"] == "failed"
        assert attempt["statusCode"] is None
        assert "may not be sent to" in attempt["error"]


async def test_endpoints_are_the_accounts_own_and_the_secret_is_shown_once(api: Api) -> None:
    created = await register(api, "http://127.0.0.1:9/hook", eventTypes=["job.failed"])
    listed = (await api.client.get("/api/v2/webhooks", headers=api.auth())).json()["data"]
    assert [e["id"] for e in listed] == [created["id"]]
    assert "secret" not in listed[0]
    assert listed[0]["eventTypes"] == ["job.failed"]
    shown = await api.client.get(f"/api/v2/webhooks/{created['id']}", headers=api.auth())
    assert "secret" not in shown.json()
    for method, suffix in (
        ("GET", ""),
        ("DELETE", ""),
        ("POST", "/actions/test"),
        ("GET", "/deliveries"),
    ):
        response = await api.client.request(
            method, f"/api/v2/webhooks/{created['id']}{suffix}", headers=api.auth("other")
        )
        assert response.status_code == 404, (method, suffix)
        assert response.json()["code"] == "webhook_not_found"
    assert (
        await api.client.get("/api/v2/webhooks", headers=api.auth("readonly"))
    ).status_code == 403
    bad = await api.client.post(
        "/api/v2/webhooks",
        json={"url": "http://127.0.0.1:9/", "eventTypes": ["job.finished"]},
        headers=api.auth(),
    )
    assert bad.status_code == 400
    assert bad.json()["errors"][0]["pointer"] == "/eventTypes/0"
    deleted = await api.client.delete(f"/api/v2/webhooks/{created['id']}", headers=api.auth())
    assert deleted.status_code == 204
    assert (await api.client.get("/api/v2/webhooks", headers=api.auth())).json()["data"] == []


async def test_delivery_history_pages_with_a_cursor(api: Api) -> None:
    receiver_count = 3
    async with running_receiver() as receiver:
        endpoint = await register(api, receiver.url)
        for _ in range(receiver_count):
            await api.client.post(
                f"/api/v2/webhooks/{endpoint['id']}/actions/test", headers=api.auth()
            )
        await deliver(api)
        seen: list[str] = []
        cursor = None
        while True:
            params = {"limit": "2", **({"cursor": cursor} if cursor else {})}
            page = (
                await api.client.get(
                    f"/api/v2/webhooks/{endpoint['id']}/deliveries",
                    params=params,
                    headers=api.auth(),
                )
            ).json()
            seen += [d["id"] for d in page["data"]]
            cursor = page["nextCursor"]
            if cursor is None:
                break
        assert len(seen) == len(set(seen)) == receiver_count
        assert len(receiver.received) == receiver_count
        for bad in ("nope", "a\x00b", "x" * 500):
            response = await api.client.get(
                f"/api/v2/webhooks/{endpoint['id']}/deliveries",
                params={"cursor": bad},
                headers=api.auth(),
            )
            assert response.status_code == 400, response.text
            assert response.json()["code"] == "invalid_cursor"
