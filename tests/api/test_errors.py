"""Every error is problem+json (contract section 3), with the codes of sections 3 and 6."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import httpx
import pytest

from tests.conftest import Api, api_settings
from tests.support import PROBLEM_MEMBERS
from vpsnap.api.app import create_app
from vpsnap.domain.model import PowerState, ServiceStatus, Vps
from vpsnap.drivers.fake import FakeDriver
from vpsnap.runtime import Runtime
from vpsnap.services.accounts import NewVps
from vpsnap.services.inventory import InventoryService
from vpsnap.store.sql import SqlStore


def assert_problem(response: httpx.Response, status: int, code: str) -> dict[str, object]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body: dict[str, object] = response.json()
    assert set(body) >= PROBLEM_MEMBERS, body
    assert body["status"] == status
    assert body["code"] == code
    assert str(body["type"]).endswith(f"/errors/{code}")
    assert body["instance"] == response.request.url.path
    assert body["requestId"] == response.headers["x-request-id"]
    assert str(body["timestamp"]).endswith("Z")
    assert "Traceback" not in response.text
    return body


def snapshots_path(api: Api, vps: str = "demo-web") -> str:
    return f"/api/v2/vps/{api.vps_ids[vps]}/snapshots"


async def test_unknown_route_is_a_problem(api: Api) -> None:
    response = await api.client.get("/api/v2/nothing-here", headers=api.auth())
    assert_problem(response, 404, "not_found")


async def test_wrong_method_is_a_problem(api: Api) -> None:
    response = await api.client.put("/api/v2/vps", headers=api.auth())
    assert_problem(response, 405, "method_not_allowed")
    assert "GET" in response.headers["allow"]


async def test_malformed_json_is_invalid_json(api: Api) -> None:
    response = await api.client.post(
        snapshots_path(api),
        content=b'{"name": "x",',
        headers={**api.auth(), "Content-Type": "application/json"},
    )
    assert_problem(response, 400, "invalid_json")


async def test_wrong_content_type_is_415(api: Api) -> None:
    response = await api.client.post(
        snapshots_path(api),
        content=b"name=x",
        headers={**api.auth(), "Content-Type": "application/x-www-form-urlencoded"},
    )
    assert_problem(response, 415, "unsupported_media_type")


async def test_oversized_body_is_413_with_or_without_content_length(api: Api) -> None:
    big = b'{"name": "x", "description": "' + b"a" * 70_000 + b'"}'
    declared = await api.client.post(
        snapshots_path(api), content=big, headers={**api.auth(), "Content-Type": "application/json"}
    )
    assert_problem(declared, 413, "payload_too_large")

    async def stream() -> object:
        for _ in range(20):
            yield b"a" * 8192

    chunked = await api.client.post(
        snapshots_path(api),
        content=stream(),  # type: ignore[arg-type]
        headers={**api.auth(), "Content-Type": "application/json"},
    )
    assert_problem(chunked, 413, "payload_too_large")
    listing = (await api.client.get(snapshots_path(api), headers=api.auth())).json()
    assert listing["data"] == []


@pytest.mark.parametrize(
    ("body", "pointer", "field_code"),
    [
        ({}, "/name", "missing_required"),
        ({"name": "has space"}, "/name", "invalid_format"),
        ({"name": "ünïcode"}, "/name", "invalid_format"),
        ({"name": ""}, "/name", "invalid_format"),
        ({"name": "a" * 41}, "/name", "too_long"),
        ({"name": 42}, "/name", "invalid_type"),
        ({"name": "ok", "description": "d" * 256}, "/description", "too_long"),
        ({"name": "ok", "description": 7}, "/description", "invalid_type"),
        ({"name": "ok", "includeMemoryState": "sometimes"}, "/includeMemoryState", "invalid_type"),
        ({"name": "ok", "nmae": "typo"}, "/nmae", "unknown_field"),
        ({"name": "ok", "include_memory_state": True}, "/include_memory_state", "unknown_field"),
    ],
)
async def test_invalid_bodies_point_at_the_field(
    api: Api, body: dict[str, object], pointer: str, field_code: str
) -> None:
    response = await api.client.post(snapshots_path(api), json=body, headers=api.auth())
    problem = assert_problem(response, 400, "invalid_request")
    errors = problem["errors"]
    assert isinstance(errors, list)
    assert {"pointer": pointer, "code": field_code} in [
        {"pointer": e["pointer"], "code": e["code"]} for e in errors
    ], errors
    assert all(e["detail"] for e in errors)
    listing = (await api.client.get(snapshots_path(api), headers=api.auth())).json()
    assert listing["data"] == []


@pytest.mark.parametrize("body", [b"[]", b'"name"', b"null", b""])
async def test_a_body_that_is_not_an_object_is_invalid_request(api: Api, body: bytes) -> None:
    response = await api.client.post(
        snapshots_path(api),
        content=body,
        headers={**api.auth(), "Content-Type": "application/json"},
    )
    assert_problem(response, 400, "invalid_request")


async def test_accepts_the_longest_allowed_name_and_description(api: Api) -> None:
    name = "A-z_0" * 8
    response = await api.client.post(
        snapshots_path(api), json={"name": name, "description": "d" * 255}, headers=api.auth()
    )
    assert response.status_code == 202
    job = await api.wait_job(response.json()["operation"]["jobId"])
    assert job["status"] == "completed", job


async def test_no_slots_is_snapshots_not_included(api: Api) -> None:
    path = snapshots_path(api, "demo-nosnap")
    listing = (await api.client.get(path, headers=api.auth())).json()
    assert listing["available"] is False
    assert "upgrade" in listing["reason"]
    assert listing["actions"]["canCreate"] == {
        "allowed": False,
        "reason": listing["actions"]["canCreate"]["reason"],
        "code": "snapshots_not_included",
    }
    response = await api.client.post(path, json={"name": "x"}, headers=api.auth())
    assert_problem(response, 409, "snapshots_not_included")


async def test_all_slots_used_is_snapshot_limit_reached_with_counts(api: Api) -> None:
    path = snapshots_path(api, "demo-db")
    first = await api.client.post(path, json={"name": "only"}, headers=api.auth())
    assert first.status_code == 202
    listing = (await api.client.get(path, headers=api.auth())).json()
    assert listing["limits"] == {"totalSnapshots": 1, "usedSnapshots": 1, "remainingSnapshots": 0}
    assert listing["actions"]["canCreate"]["code"] == "snapshot_limit_reached"
    second = await api.client.post(path, json={"name": "second"}, headers=api.auth())
    problem = assert_problem(second, 409, "snapshot_limit_reached")
    assert problem["extensions"] == {"totalSnapshots": 1, "usedSnapshots": 1}


async def test_a_deleting_snapshot_frees_its_slot_at_once(api: Api) -> None:
    path = snapshots_path(api, "demo-db")
    created = await api.client.post(path, json={"name": "old"}, headers=api.auth())
    await api.wait_job(created.json()["operation"]["jobId"])
    deleted = await api.client.delete(f"{path}/old", headers=api.auth())
    assert deleted.status_code == 202
    # Accepted while the delete may still be running: it runs first, in arrival order.
    replacement = await api.client.post(path, json={"name": "new"}, headers=api.auth())
    assert replacement.status_code == 202
    job = await api.wait_job(replacement.json()["operation"]["jobId"])
    assert job["status"] == "completed", job
    listing = (await api.client.get(path, headers=api.auth())).json()
    assert [s["name"] for s in listing["data"]] == ["new"]


async def test_unknown_snapshot_is_snapshot_not_found(api: Api) -> None:
    for method, suffix in (("DELETE", "/ghost"), ("POST", "/ghost/actions/restore")):
        response = await api.client.request(
            method, snapshots_path(api) + suffix, headers=api.auth()
        )
        assert_problem(response, 404, "snapshot_not_found")


async def test_nothing_to_restore_closes_the_restore_gate(api: Api) -> None:
    listing = (await api.client.get(snapshots_path(api), headers=api.auth())).json()
    assert listing["actions"]["canRestore"]["allowed"] is False
    assert listing["actions"]["canRestore"]["reason"]


async def test_inactive_service_is_vps_not_ready(api: Api) -> None:
    vps = await api.runtime.services.accounts.add_vps(
        NewVps(
            account_name="demo",
            name="suspended-one",
            disks=(str(api.disk("suspended-one")),),  # its own (no job ever opens it)
            snapshot_slots=2,
            service_status=ServiceStatus.SUSPENDED,
        )
    )
    path = f"/api/v2/vps/{vps.id}/snapshots"
    listing = (await api.client.get(path, headers=api.auth())).json()
    assert listing["actions"]["canCreate"]["code"] == "vps_not_ready"
    assert listing["actions"]["canRestore"]["code"] == "vps_not_ready"
    response = await api.client.post(path, json={"name": "x"}, headers=api.auth())
    assert_problem(response, 409, "vps_not_ready")


async def test_problem_pages_exist_for_every_code(api: Api) -> None:
    response = await api.client.get("/api/v2/vps")
    problem = response.json()
    page = await api.client.get(httpx.URL(problem["type"]).path)
    assert page.status_code == 200
    assert "text/html" in page.headers["content-type"]
    assert "401" in page.text
    index = await api.client.get("/errors")
    for code in ("snapshot_limit_reached", "rate_limited", "invalid_cursor"):
        assert f"/errors/{code}" in index.text
    assert_problem(await api.client.get("/errors/no_such_code"), 404, "not_found")


async def test_request_id_is_echoed_when_valid_and_made_when_not(api: Api) -> None:
    echoed = await api.client.get("/healthz", headers={"X-Request-Id": "req_client-given.1"})
    assert echoed.headers["x-request-id"] == "req_client-given.1"
    replaced = await api.client.get("/healthz", headers={"X-Request-Id": "bad id <script>"})
    assert replaced.headers["x-request-id"].startswith("req_")
    assert replaced.headers["x-request-id"] != "bad id <script>"


async def test_service_endpoints(api: Api) -> None:
    assert (await api.client.get("/healthz")).json() == {"status": "ok"}
    ready = await api.client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["checks"] == {"database": "ok", "hypervisor": "ok"}
    spec = (await api.client.get("/openapi.json")).json()
    operations = {
        op["operationId"]
        for path in spec["paths"].values()
        for op in path.values()
        if isinstance(op, dict) and "operationId" in op
    }
    assert {
        "listVps",
        "getVps",
        "listSnapshots",
        "createSnapshot",
        "deleteSnapshot",
        "restoreSnapshot",
        "getJob",
    } <= operations
    assert (await api.client.get("/docs")).status_code == 200


async def test_the_openapi_document_lists_the_problems_the_app_answers(api: Api) -> None:
    # Found by tests/api/test_fuzz.py: `GET /api/v2/vps?cursor=` (400), `GET /api/v2/vps`
    # without a key (401), `GET /api/v2/vps/0` (404) and `GET /errors/0` (404) answered
    # statuses the document did not list, while it listed a 422 the app never answers.
    spec = (await api.client.get("/openapi.json")).json()
    problem = {"schema": {"$ref": "#/components/schemas/ProblemOut"}}
    for path, item in spec["paths"].items():
        for method, operation in item.items():
            responses = operation["responses"]
            # The only 422 is a reused Idempotency-Key, never FastAPI's validation error.
            if "422" in responses:
                media = responses["422"]["content"]["application/problem+json"]
                assert set(media["examples"]) == {"idempotency_key_reused"}, (method, path)
            assert "429" in responses, (method, path)
            for status, response in responses.items():
                if int(status) >= 400 and (path, status) != ("/readyz", "503"):
                    content = response["content"]
                    assert set(content) == {"application/problem+json"}, (method, path, status)
                    media = content["application/problem+json"]
                    assert media["schema"] == problem["schema"], (method, path, status)
                    # One example per code (tests/api/test_error_catalogue.py checks them).
                    assert media["examples"], (method, path, status)
    assert {"HTTPValidationError", "ValidationError"}.isdisjoint(spec["components"]["schemas"])
    assert {"400", "401", "403"} <= set(spec["paths"]["/api/v2/vps"]["get"]["responses"])
    get_vps = spec["paths"]["/api/v2/vps/{vps_id}"]["get"]["responses"]
    assert {"401", "403", "404"} <= set(get_vps)
    assert "404" in spec["paths"]["/errors/{code}"]["get"]["responses"]
    assert "503" in spec["paths"]["/readyz"]["get"]["responses"]
    create = spec["paths"]["/api/v2/vps/{vps_id}/snapshots"]["post"]["responses"]
    assert {"400", "413", "415"} <= set(create)


class _BrokenStore:
    """A store with a bug (not a domain error): the API must still answer problem+json."""

    def transaction(
        self, *, read_only: bool = False, small: bool = False, bulk: bool = False
    ) -> object:
        raise RuntimeError("store bug: secret internal detail")


class _BrokenDriver(FakeDriver):
    """A driver whose power-state read fails with something that is not a domain error (as
    qemu.qmp's own assertions did, issue 9 kind 11d)."""

    async def power_state(self, vps: Vps) -> PowerState:
        if vps.name == "web":
            raise AssertionError("qemu.qmp: secret internal detail")
        return await super().power_state(vps)


async def _broken_app(
    store: SqlStore, tmp_path: Path, driver: FakeDriver
) -> tuple[Runtime, str, str]:
    settings = api_settings(tmp_path)
    runtime = Runtime.build(settings, store=store, driver=driver)
    await runtime.services.accounts.create_account("acme")
    from vpsnap.domain.auth import Scope

    issued = await runtime.services.credentials.issue("acme", frozenset({Scope.READ_VM}))
    vps = await runtime.services.accounts.add_vps(
        NewVps(account_name="acme", name="web", disks=(), snapshot_slots=1)
    )
    return runtime, issued.secret, vps.id


async def test_an_unexpected_exception_is_a_500_problem_without_internals(
    store: SqlStore, tmp_path: Path
) -> None:
    runtime, secret, vps_id = await _broken_app(store, tmp_path, FakeDriver())
    services = dataclasses.replace(
        runtime.services,
        inventory=InventoryService(_BrokenStore(), runtime.services.nodes),  # type: ignore[arg-type]
    )
    app = create_app(services, runtime.settings)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        response = await client.get(
            f"/api/v2/vps/{vps_id}", headers={"Authorization": f"Bearer {secret}"}
        )
    body = assert_problem(response, 500, "internal_error")
    assert "secret internal detail" not in response.text
    assert "RuntimeError" not in str(body)


async def test_a_power_state_read_that_fails_in_any_way_is_unknown_not_5xx(
    store: SqlStore, tmp_path: Path
) -> None:
    # issue 9, kind 11d: an AssertionError inside qemu.qmp made GET /api/v2/vps/{id} a 500. The
    # API now serves what the node's agent published; the agent's read that fails in any way
    # publishes `unknown` (and the other VPSes are still published).
    runtime, secret, vps_id = await _broken_app(store, tmp_path, _BrokenDriver())
    await runtime.services.accounts.add_vps(
        NewVps(account_name="acme", name="fine", disks=("/fake/fine.qcow2",), snapshot_slots=1)
    )
    await runtime.observer().refresh_power_states()
    app = create_app(runtime.services, runtime.settings)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        headers = {"Authorization": f"Bearer {secret}"}
        one = await client.get(f"/api/v2/vps/{vps_id}", headers=headers)
        listed = await client.get("/api/v2/vps", headers=headers)
    assert one.status_code == 200, one.text
    assert one.json()["powerState"] == "unknown"
    assert listed.status_code == 200, listed.text
    assert [v["powerState"] for v in listed.json()["data"]] == ["unknown", "stopped"]
    assert "secret internal detail" not in one.text + listed.text


async def test_the_openapi_document_declares_both_ways_to_present_a_key(api: Api) -> None:
    spec = (await api.client.get("/openapi.json")).json()
    schemes = spec["components"]["securitySchemes"]
    assert schemes["bearerKey"] == {
        "type": "http",
        "scheme": "bearer",
        "description": "An API key as `Authorization: Bearer <key>`.",
    }
    assert (schemes["apiKeyHeader"]["in"], schemes["apiKeyHeader"]["name"]) == (
        "header",
        "X-API-Key",
    )
    for path, item in spec["paths"].items():
        for operation in item.values():
            expected = (
                [{"bearerKey": []}, {"apiKeyHeader": []}] if path.startswith("/api/") else None
            )
            assert operation.get("security") == expected, path
