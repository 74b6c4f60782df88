"""``client.audit`` and ``client.webhooks`` against a real server: the audit trail of what the
key did, webhook endpoints from create to delete, a test event delivered to a real receiver on
127.0.0.1 that verifies its signature, delivery attempts, and each refusal rebuilt as its
typed error from the problem's ``code``."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta

import pytest

from tests.client.support import Recording
from tests.live_server import LiveServer
from tests.webhook_receiver import running_receiver
from vpsnap.client import (
    EVENT_TYPES,
    AsyncClient,
    AuditEvent,
    Client,
    Conflict,
    CreatedWebhook,
    Forbidden,
    InvalidRequest,
    VpsNotFound,
    Webhook,
    WebhookDelivery,
    WebhookNotFound,
)

pytestmark = [pytest.mark.slow, pytest.mark.qemu]

UNKNOWN_WEBHOOK = "whk_" + "0" * 26
DEADLINE = 20.0  # seconds for a delivery attempt to show up (the server checks every 0.2 s)


def test_audit_events_of_the_keys_own_actions(server: LiveServer) -> None:
    name = server.add_vps(2)
    started = datetime.now(UTC) - timedelta(seconds=5)
    with Client(server.url, server.key()) as client:
        vps = client.vps.get(name)
        client.snapshots.create(vps, "audited").wait(timeout=60)
        client.snapshots.delete(vps, "audited").wait(timeout=60)
        events = list(client.audit.list(vps=name, since=started))
        assert all(isinstance(e, AuditEvent) for e in events)
        # Newest first: this key's two actions, after the operator's `admin vps add`.
        assert [e.action for e in events] == ["snapshot.delete", "snapshot.create", "vps.add"]
        assert events[2].actor.kind == "admin"
        create = events[1]
        assert (create.outcome, create.vps_id, create.actor.kind) == (
            "succeeded",
            vps.id,
            "api_key",
        )
        assert create.actor.id.startswith("key_")
        assert create.target is not None
        assert (create.target.type, create.target.id) == ("snapshot", "audited")
        assert create.request_id is not None
        assert create.occurred_at >= started
        # Filters: by action and actor; the time range is half-open.
        by_action = list(client.audit.list(vps=vps.id, action="snapshot.create"))
        assert [e.id for e in by_action] == [create.id]
        mine = list(client.audit.list(actor=create.actor.id, actor_kind="api_key", limit=100))
        assert {e.id for e in events[:2]} <= {e.id for e in mine}
        assert events[2].id not in {e.id for e in mine}  # the operator's, not the key's
        assert list(client.audit.list(vps=vps, until=started)) == []


def test_audit_pages_are_lazy(server: LiveServer) -> None:
    recording = Recording()
    name = server.add_vps(1)
    with Client(server.url, server.key(), transport=recording) as client:
        vps = client.vps.get(name)
        for hours in (4, 5, 6):
            client.schedules.set(vps, interval_hours=hours)
        sent = recording.attempts
        pager = client.audit.list(vps=vps.id, action="schedule.update", limit=1)
        assert recording.attempts == sent  # nothing is sent until it is iterated
        pages = list(pager.pages())
        assert [len(p.items) for p in pages] == [1, 1, 1]
        assert recording.attempts == sent + 3
        first = pages[0].items[0]
        again = client.audit.list(vps=vps.id, action="schedule.update", limit=2).page(
            pages[0].next_cursor
        )
        assert first.id not in {e.id for e in again.items}
        assert len(again.items) == 2


def test_audit_refusals_are_typed_errors(server: LiveServer) -> None:
    with Client(server.url, server.key("readonly")) as client:
        with pytest.raises(Forbidden) as forbidden:
            list(client.audit.list())
        assert forbidden.value.status == 403
        assert forbidden.value.request_id is not None
        assert "read:audit" in forbidden.value.required_scopes
    with Client(server.url, server.key()) as client:
        with pytest.raises(InvalidRequest) as bad_cursor:
            client.audit.list(cursor="not-a-cursor").page()
        assert bad_cursor.value.code == "invalid_cursor"
        with pytest.raises(InvalidRequest) as bad_action:
            list(client.audit.list(action="Not An Action"))
        assert bad_action.value.field_errors[0].pointer == "/query/action"
        with pytest.raises(VpsNotFound):
            list(client.audit.list(vps="no-such-vps"))


def test_webhook_endpoints_from_create_to_delete(server: LiveServer) -> None:
    with Client(server.url, server.key()) as client:
        created = client.webhooks.create(
            "http://127.0.0.1:9/hooks",
            event_types=["job.failed", "snapshot.created"],
            description="ci",
        )
        try:
            assert isinstance(created, CreatedWebhook)
            assert created.secret.startswith("whsec_")
            assert created.secret not in repr(created)  # kept out of logs
            assert created.event_types == ("job.failed", "snapshot.created")
            assert (created.enabled, created.description) == (True, "ci")
            listed = client.webhooks.list()
            assert created.id in {w.id for w in listed}
            assert all(type(w) is Webhook for w in listed)  # no secret after the create
            shown = client.webhooks.get(created.id)
            assert shown == client.webhooks.get(created)
            assert shown.url == "http://127.0.0.1:9/hooks"
            assert shown.last_success_at is None
            everything = client.webhooks.create("http://127.0.0.1:9/all")
            assert set(everything.event_types) == set(EVENT_TYPES)
            client.webhooks.delete(everything)
        finally:
            client.webhooks.delete(created.id)
        assert created.id not in {w.id for w in client.webhooks.list()}
        actions = [e.action for e in client.audit.list(limit=10)]
        assert actions[:4] == 2 * ["webhook.delete"] + 2 * ["webhook.create"]


def test_webhook_refusals_are_typed_errors(server: LiveServer) -> None:
    with Client(server.url, server.key()) as client:
        with pytest.raises(WebhookNotFound) as missing:
            client.webhooks.get(UNKNOWN_WEBHOOK)
        assert (missing.value.status, missing.value.code) == (404, "webhook_not_found")
        for call in (client.webhooks.delete, client.webhooks.test):
            with pytest.raises(WebhookNotFound):
                call(UNKNOWN_WEBHOOK)
        with pytest.raises(WebhookNotFound):
            list(client.webhooks.deliveries(UNKNOWN_WEBHOOK))
        with pytest.raises(InvalidRequest) as private:
            client.webhooks.create("http://10.1.2.3/hooks")
        assert [(f.pointer, f.code) for f in private.value.field_errors] == [
            ("/url", "not_allowed")
        ]
        with pytest.raises(InvalidRequest) as unknown_event:
            client.webhooks.create("http://127.0.0.1:9/x", event_types=["job.completed", "nope"])
        assert unknown_event.value.field_errors[0].pointer == "/eventTypes/1"
        # Another account's endpoint is not found, like a missing one.
        theirs = client.webhooks.create("http://127.0.0.1:9/theirs")
        try:
            with Client(server.url, server.key("other")) as other:
                with pytest.raises(WebhookNotFound):
                    other.webhooks.get(theirs.id)
                assert theirs.id not in {w.id for w in other.webhooks.list()}
        finally:
            client.webhooks.delete(theirs)
    with Client(server.url, server.key("readonly")) as readonly:
        with pytest.raises(Forbidden) as forbidden:
            readonly.webhooks.list()
        assert "write:vm" in forbidden.value.required_scopes


def test_at_most_ten_endpoints(server: LiveServer) -> None:
    with Client(server.url, server.key("other")) as client:
        made = [client.webhooks.create(f"http://127.0.0.1:9/{i}") for i in range(10)]
        try:
            with pytest.raises(Conflict) as full:
                client.webhooks.create("http://127.0.0.1:9/eleventh")
            assert full.value.status == 409
        finally:
            for webhook in made:
                client.webhooks.delete(webhook)


async def test_a_test_event_reaches_a_real_receiver_signed(server: LiveServer) -> None:
    async with (
        running_receiver(statuses=[500]) as receiver,
        AsyncClient(server.url, server.key()) as client,
    ):
        created = await client.webhooks.create(receiver.url, description="async")
        try:
            sent = await client.webhooks.test(created)
            assert sent.event_type == "webhook.test"
            # The first attempt is answered 500, the retry 204: both are listed, newest first.
            deliveries: list[WebhookDelivery] = []
            deadline = time.monotonic() + DEADLINE
            while len(deliveries) < 2 and time.monotonic() < deadline:
                await asyncio.sleep(0.2)
                deliveries = [d async for d in client.webhooks.deliveries(created, limit=1)]
            assert [(d.attempt, d.outcome, d.status_code) for d in deliveries] == [
                (2, "delivered", 204),
                (1, "failed", 500),
            ]
            assert {d.message_id for d in deliveries} == {sent.message_id}
            assert all(d.duration_ms >= 0 for d in deliveries)
            delivered = receiver.delivered()
            assert len(delivered) == 1
            assert delivered[0].message_id == sent.message_id
            assert delivered[0].verified(created.secret)["type"] == "webhook.test"
            shown = await client.webhooks.get(created.id)
            assert shown.last_success_at is not None
            assert shown.last_failure_at is not None
            first = await client.webhooks.deliveries(created, limit=1).page()
            assert first.has_more
        finally:
            await client.webhooks.delete(created)
