"""The audit trail over the API: every mutating route writes an event in its own transaction
(walked over the app's route table, so a new route without an entry here fails), refusals are
recorded as failed, a rolled-back action leaves nothing, and ``GET /api/v2/audit-events`` is
scoped, filtered and paginated."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import structlog.testing
from fastapi.routing import APIRoute

from tests.conftest import Api
from vpsnap.domain.auth import Principal, Scope
from vpsnap.store.sql import SqlTransaction

pytestmark = pytest.mark.qemu

MUTATING = frozenset({"POST", "PUT", "PATCH", "DELETE"})


@pytest.fixture
def api_overrides() -> dict[str, object]:
    # Webhook URLs on this host are allowed only because the operator says so.
    return {"webhook_allowed_networks": ["127.0.0.1/32"]}


@pytest.fixture
def api_worker() -> bool:
    # Jobs stay queued: the trail is about the requests (power actions must not start QEMU).
    return False


def _routes(router: object) -> Iterator[APIRoute]:
    for route in getattr(router, "routes", ()):
        inner = getattr(route, "original_router", None)
        if inner is not None:
            yield from _routes(inner)
        elif isinstance(route, APIRoute):
            yield route


def mutating_routes(api: Api) -> set[tuple[str, str]]:
    app = api.client._transport.app  # type: ignore[attr-defined]
    return {
        (method, route.path)
        for route in _routes(app.router)
        for method in route.methods & MUTATING
        if route.path.startswith("/api/")
    }


async def key_id(api: Api, token: str = "full") -> str:
    principal: Principal = await api.runtime.services.credentials.authenticate(api.tokens[token])
    assert principal.key_id is not None
    return principal.key_id


async def created_snapshot(api: Api, name: str) -> None:
    """A snapshot row of demo-web, made by hand (no worker runs here)."""
    vps_id = api.vps_ids["demo-web"]
    response = await api.client.post(
        f"/api/v2/vps/{vps_id}/snapshots", json={"name": name}, headers=api.auth()
    )
    assert response.status_code == 202, response.text
    worker = api.runtime.worker()
    assert await worker.run_one()


async def webhook_id(api: Api) -> str:
    response = await api.client.post(
        "/api/v2/webhooks", json={"url": "http://127.0.0.1:9/hook"}, headers=api.auth()
    )
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


@dataclass(frozen=True)
class Case:
    """How to call one mutating route and the audit event it must leave."""

    action: str
    target_type: str
    call: Callable[[Api, str], Awaitable[tuple[str, str, dict[str, Any] | None]]]
    """Prepares what the call needs; returns (method, path, json body)."""


def _vps(api: Api) -> str:
    return api.vps_ids["demo-web"]


async def _create(api: Api, _: str) -> tuple[str, str, dict[str, Any] | None]:
    return "POST", f"/api/v2/vps/{_vps(api)}/snapshots", {"name": "audited"}


async def _delete(api: Api, _: str) -> tuple[str, str, dict[str, Any] | None]:
    await created_snapshot(api, "to-delete")
    return "DELETE", f"/api/v2/vps/{_vps(api)}/snapshots/to-delete", None


async def _restore(api: Api, _: str) -> tuple[str, str, dict[str, Any] | None]:
    await created_snapshot(api, "to-restore")
    return "POST", f"/api/v2/vps/{_vps(api)}/snapshots/to-restore/actions/restore", None


async def _schedule_put(api: Api, _: str) -> tuple[str, str, dict[str, Any] | None]:
    body = {"enabled": True, "intervalHours": 6}
    return "POST", f"/api/v2/vps/{_vps(api)}/snapshot-schedules", body


async def _schedule_delete(api: Api, _: str) -> tuple[str, str, dict[str, Any] | None]:
    return "DELETE", f"/api/v2/vps/{_vps(api)}/snapshot-schedules", None


async def _config(api: Api, _: str) -> tuple[str, str, dict[str, Any] | None]:
    body = {"resources": {"snapshotSlots": 5}}
    return "POST", f"/api/v2/vps/{_vps(api)}/actions/config", body


def _power(action: str) -> Callable[[Api, str], Awaitable[tuple[str, str, None]]]:
    async def call(api: Api, _: str) -> tuple[str, str, None]:
        return "POST", f"/api/v2/vps/{_vps(api)}/actions/{action}", None

    return call


async def _webhook_create(api: Api, _: str) -> tuple[str, str, dict[str, Any] | None]:
    return "POST", "/api/v2/webhooks", {"url": "http://127.0.0.1:9/hook"}


async def _webhook_delete(api: Api, _: str) -> tuple[str, str, dict[str, Any] | None]:
    return "DELETE", f"/api/v2/webhooks/{await webhook_id(api)}", None


async def _webhook_test(api: Api, _: str) -> tuple[str, str, dict[str, Any] | None]:
    return "POST", f"/api/v2/webhooks/{await webhook_id(api)}/actions/test", None


CASES: dict[tuple[str, str], Case] = {
    ("POST", "/api/v2/vps/{vps_id}/snapshots"): Case("snapshot.create", "snapshot", _create),
    ("DELETE", "/api/v2/vps/{vps_id}/snapshots/{snapshot_id}"): Case(
        "snapshot.delete", "snapshot", _delete
    ),
    ("POST", "/api/v2/vps/{vps_id}/snapshots/{snapshot_id}/actions/restore"): Case(
        "snapshot.restore", "snapshot", _restore
    ),
    ("POST", "/api/v2/vps/{vps_id}/snapshot-schedules"): Case(
        "schedule.update", "schedule", _schedule_put
    ),
    ("DELETE", "/api/v2/vps/{vps_id}/snapshot-schedules"): Case(
        "schedule.delete", "schedule", _schedule_delete
    ),
    ("POST", "/api/v2/vps/{vps_id}/actions/config"): Case("vps.config", "vps", _config),
    **{
        ("POST", f"/api/v2/vps/{{vps_id}}/actions/{action}"): Case(
            f"vps.{action}", "vps", _power(action)
        )
        for action in ("start", "shutdown", "stop", "restart", "reset")
    },
    ("POST", "/api/v2/webhooks"): Case("webhook.create", "webhook", _webhook_create),
    ("DELETE", "/api/v2/webhooks/{webhook_id}"): Case("webhook.delete", "webhook", _webhook_delete),
    ("POST", "/api/v2/webhooks/{webhook_id}/actions/test"): Case(
        "webhook.test", "webhook", _webhook_test
    ),
}


async def audit_events(api: Api, token: str = "full", **params: str) -> list[dict[str, Any]]:
    response = await api.client.get(
        "/api/v2/audit-events", params={"limit": "100", **params}, headers=api.auth(token)
    )
    assert response.status_code == 200, response.text
    events: list[dict[str, Any]] = response.json()["data"]
    return events


async def test_every_mutating_route_has_an_audit_case(api: Api) -> None:
    # A new POST/PUT/PATCH/DELETE route fails here until it is audited and listed in CASES.
    assert mutating_routes(api) == set(CASES)


@pytest.mark.parametrize("route", sorted(CASES), ids=lambda r: f"{r[0]} {r[1]}")
async def test_a_mutating_route_leaves_one_audit_event(api: Api, route: tuple[str, str]) -> None:
    case = CASES[route]
    method, path, body = await case.call(api, route[1])
    request_id = "req-audit-" + case.action.replace(".", "-")
    response = await api.client.request(
        method, path, json=body, headers={**api.auth(), "X-Request-Id": request_id}
    )
    assert response.is_success, response.text
    events = [e for e in await audit_events(api) if e["requestId"] == request_id]
    assert len(events) == 1, events
    [event] = events
    assert event["action"] == case.action
    assert event["outcome"] == "succeeded"
    assert event["problemCode"] is None
    assert event["actor"] == {"kind": "api_key", "id": await key_id(api), "label": None}
    assert event["clientIp"] == "127.0.0.1"  # httpx's ASGI transport is the peer
    assert event["target"]["type"] == case.target_type
    assert event["occurredAt"].endswith("Z")


async def test_jobs_carry_the_request_and_who_created_them(api: Api) -> None:
    response = await api.client.post(
        f"/api/v2/vps/{_vps(api)}/snapshots",
        json={"name": "traced"},
        headers={**api.auth(), "X-Request-Id": "req-traced-1"},
    )
    job = (
        await api.client.get(
            f"/api/jobs/{response.json()['operation']['jobId']}", headers=api.auth()
        )
    ).json()
    assert job["requestId"] == "req-traced-1"
    assert job["createdBy"] == {"kind": "api_key", "id": await key_id(api)}
    [event] = await audit_events(api, action="snapshot.create")
    assert event["details"] == {"jobId": job["jobId"]}


async def test_a_refusal_is_recorded_as_failed_with_its_code(api: Api) -> None:
    path = f"/api/v2/vps/{api.vps_ids['demo-nosnap']}/snapshots"
    response = await api.client.post(
        path, json={"name": "nope"}, headers={**api.auth(), "X-Request-Id": "req-refused"}
    )
    assert response.status_code == 409
    [event] = await audit_events(api, action="snapshot.create")
    assert event["requestId"] == "req-refused"
    assert event["outcome"] == "failed"
    assert event["problemCode"] == "snapshots_not_included"
    assert event["vpsId"] == api.vps_ids["demo-nosnap"]
    # Nothing of the refused action was kept.
    listing = await api.client.get(path, headers=api.auth())
    assert listing.json()["data"] == []


async def test_a_rolled_back_action_leaves_no_audit_event(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    original = SqlTransaction.add_audit_event

    async def then_fail(self: SqlTransaction, event: Any) -> None:
        await original(self, event)
        # The row is in the transaction; the failure that follows rolls everything back.
        raise RuntimeError("the database went away")

    monkeypatch.setattr(SqlTransaction, "add_audit_event", then_fail)
    path = f"/api/v2/vps/{_vps(api)}/snapshots"
    response = await api.client.post(
        path, json={"name": "rolled-back"}, headers={**api.auth(), "X-Request-Id": "req-rb"}
    )
    assert response.status_code == 500
    monkeypatch.undo()
    assert [e for e in await audit_events(api) if e["requestId"] == "req-rb"] == []
    listing = await api.client.get(path, headers=api.auth())
    assert listing.json()["data"] == []  # and no snapshot, no job


async def test_the_trail_needs_read_audit_which_write_all_grants(api: Api) -> None:
    readonly = await api.client.get("/api/v2/audit-events", headers=api.auth("readonly"))
    assert readonly.status_code == 403
    assert readonly.json()["extensions"] == {"requiredScopes": ["read:audit"]}
    assert (await api.client.get("/api/v2/audit-events")).status_code == 401
    issued = await api.runtime.services.credentials.issue("demo", frozenset({Scope.READ_AUDIT}))
    only_audit = await api.client.get(
        "/api/v2/audit-events", headers={"Authorization": f"Bearer {issued.secret}"}
    )
    assert only_audit.status_code == 200


async def test_each_account_sees_only_its_own_events(api: Api) -> None:
    await api.client.post(
        f"/api/v2/vps/{_vps(api)}/snapshots", json={"name": "mine"}, headers=api.auth()
    )
    other = await api.client.post(
        f"/api/v2/vps/{api.vps_ids['other-web']}/snapshots",
        json={"name": "theirs"},
        headers=api.auth("other"),
    )
    assert other.status_code == 202
    mine = await audit_events(api, action="snapshot.create")
    theirs = await audit_events(api, "other", action="snapshot.create")
    assert [e["target"]["id"] for e in mine] == ["mine"]
    assert [e["target"]["id"] for e in theirs] == ["theirs"]
    # Another account's VPS id as a filter finds nothing, and says nothing about it.
    assert await audit_events(api, vpsId=api.vps_ids["other-web"]) == []


async def test_filters_and_cursor_pagination(api: Api) -> None:
    vps_id = _vps(api)
    for name in ("one", "two", "three"):
        await api.client.post(
            f"/api/v2/vps/{vps_id}/snapshots", json={"name": name}, headers=api.auth()
        )
    await api.client.post(
        f"/api/v2/vps/{vps_id}/snapshot-schedules",
        json={"enabled": True, "intervalHours": 6},
        headers=api.auth(),
    )
    everything = await audit_events(api)
    assert [e["action"] for e in everything[:4]] == [
        "schedule.update",
        "snapshot.create",
        "snapshot.create",
        "snapshot.create",
    ]  # newest first
    creates = await audit_events(api, action="snapshot.create", vpsId=vps_id)
    assert [e["target"]["id"] for e in creates] == ["three", "two", "one"]
    assert await audit_events(api, actor=await key_id(api), action="snapshot.create") == creates
    assert await audit_events(api, actor=await key_id(api, "other")) == []
    assert await audit_events(api, actorKind="scheduler") == []

    seen: list[str] = []
    cursor: str | None = None
    while True:
        params = {"limit": "1", "action": "snapshot.create"}
        if cursor:
            params["cursor"] = cursor
        page = (
            await api.client.get("/api/v2/audit-events", params=params, headers=api.auth())
        ).json()
        seen += [e["target"]["id"] for e in page["data"]]
        cursor = page["nextCursor"]
        assert page["hasMore"] is (cursor is not None)
        if cursor is None:
            break
    assert seen == ["three", "two", "one"]

    first = creates[-1]["occurredAt"]
    assert await audit_events(api, action="snapshot.create", until=first) == []
    assert len(await audit_events(api, action="snapshot.create", since=first)) == 3
    bad = await api.client.get(
        "/api/v2/audit-events", params={"cursor": "nope"}, headers=api.auth()
    )
    assert bad.status_code == 400
    assert bad.json()["code"] == "invalid_cursor"
    wrong_order = await api.client.get(
        "/api/v2/audit-events",
        params={"since": "2030-01-02T00:00:00Z", "until": "2030-01-01T00:00:00Z"},
        headers=api.auth(),
    )
    assert wrong_order.status_code == 400


async def test_the_client_address_is_the_peer_without_a_trusted_proxy(api: Api) -> None:
    # X-Forwarded-For from an untrusted peer changes nothing (VPSNAP_FORWARDED_ALLOW_IPS).
    await api.client.post(
        f"/api/v2/vps/{_vps(api)}/snapshots",
        json={"name": "spoofed"},
        headers={**api.auth(), "X-Forwarded-For": "203.0.113.9"},
    )
    [event] = await audit_events(api, action="snapshot.create")
    assert event["clientIp"] == "127.0.0.1"


async def test_the_access_log_names_the_account_key_and_client(api: Api) -> None:
    with structlog.testing.capture_logs() as logs:
        await api.client.get("/api/v2/vps", headers={**api.auth(), "X-Request-Id": "req-log-1"})
        await api.client.get("/api/v2/vps", headers={"X-Request-Id": "req-log-2"})
    lines = {e["request_id"]: e for e in logs if e["event"] == "request_completed"}
    principal = await api.runtime.services.credentials.authenticate(api.tokens["full"])
    assert lines["req-log-1"]["key_id"] == principal.key_id
    assert lines["req-log-1"]["account_id"] == principal.account_id
    assert lines["req-log-1"]["client_ip"] == "127.0.0.1"
    assert lines["req-log-2"]["key_id"] is None  # not authenticated: 401
    assert lines["req-log-2"]["status"] == 401
