"""Contract section 9 through the real app: upgrade options, preview and commit of snapshot
slots, the billing webhook (a real HTTP receiver on 127.0.0.1), scopes and ownership."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.api.test_errors import assert_problem
from tests.conftest import api_settings
from tests.services.test_capacity import EXAMPLE, SECRET, WebhookReceiver
from vpsnap.api.app import create_app
from vpsnap.demo import seed_demo
from vpsnap.domain.auth import Scope
from vpsnap.domain.problems import CATALOGUE
from vpsnap.runtime import Runtime, qemu_img_for
from vpsnap.store.sql import SqlStore

# Snapshots are taken by the worker on real qcow2 disks.
pytestmark = pytest.mark.qemu


@dataclass
class CapacityApi:
    client: httpx.AsyncClient
    runtime: Runtime
    tokens: dict[str, str]
    vps_ids: dict[str, str]
    receiver: WebhookReceiver

    def auth(self, token: str = "full") -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[token]}"}

    def path(self, vps: str, tail: str) -> str:
        return f"/api/v2/vps/{self.vps_ids[vps]}/{tail}"

    async def upgrade(self, vps: str = "demo-web", token: str = "full") -> httpx.Response:
        return await self.client.get(self.path(vps, "actions/upgrade"), headers=self.auth(token))

    async def config(
        self, body: dict[str, Any], vps: str = "demo-web", token: str = "full"
    ) -> httpx.Response:
        return await self.client.post(
            self.path(vps, "actions/config"), json=body, headers=self.auth(token)
        )

    async def limits(self, vps: str = "demo-web") -> dict[str, int]:
        response = await self.client.get(self.path(vps, "snapshots"), headers=self.auth())
        limits: dict[str, int] = response.json()["limits"]
        return limits

    async def take_snapshot(self, name: str, vps: str = "demo-web") -> None:
        created = await self.client.post(
            self.path(vps, "snapshots"), json={"name": name}, headers=self.auth()
        )
        assert created.status_code == 202, created.text
        job_id = created.json()["operation"]["jobId"]
        for _ in range(100):
            job = await self.client.get(
                f"/api/jobs/{job_id}", headers={**self.auth(), "Prefer": "wait=5"}
            )
            if job.json()["status"] in ("completed", "failed"):
                assert job.json()["status"] == "completed", job.json()
                return
        raise AssertionError(f"snapshot {name} was not taken")


@pytest.fixture
async def receiver() -> AsyncIterator[WebhookReceiver]:
    hook = WebhookReceiver()
    await hook.start()
    yield hook
    await hook.stop()


@pytest.fixture
async def capi(
    store: SqlStore, tmp_path: Path, receiver: WebhookReceiver
) -> AsyncIterator[CapacityApi]:
    """The app built as ``tests/conftest.py::api`` builds it, with a capacity file and a
    billing webhook pointing at the test receiver."""
    settings = api_settings(
        tmp_path,
        capacity_file=EXAMPLE,
        billing_webhook_url=receiver.url,
        billing_webhook_secret=SECRET,
        # Roomy for a loaded CI machine (0.5 s failed the successful commit there); the
        # hanging receiver costs its tests this long.
        billing_webhook_timeout_seconds=2.0,
    )
    runtime = Runtime.build(settings, store=store)
    await runtime.prepare()
    tokens = await seed_demo(
        runtime, qemu_img_for(settings), disk_bytes=64 * 1024**2, data_bytes=1024**2
    )
    vps_ids = {vps.name: vps.id for vps, _ in await runtime.services.accounts.list_vps()}
    worker = runtime.worker()
    worker_task = asyncio.create_task(worker.run())
    app = create_app(runtime.services, settings)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        yield CapacityApi(client, runtime, tokens, vps_ids, receiver)
    worker.stop()
    await worker_task


def test_billing_unavailable_is_in_the_problem_catalogue() -> None:
    assert CATALOGUE["billing_unavailable"].status == 503


# -- GET /actions/upgrade ------------------------------------------------------------------------


async def test_upgrade_options_list_the_slot_option_and_the_plans(capi: CapacityApi) -> None:
    response = await capi.upgrade(token="readonly")  # read:vm is enough
    assert response.status_code == 200, response.text
    assert response.json() == {
        "vpsId": capi.vps_ids["demo-web"],
        "currentProduct": {
            "id": None,
            "name": None,
            # The demo VPS is on no plan: its own billing record is shown.
            "price": {"amount": "5.00", "currencyCode": "EUR", "billingCycle": "monthly"},
            "snapshotSlots": 3,
            "includedSnapshotSlots": 0,
        },
        "configurableOptions": [
            {
                "key": "snapshotSlots",
                "label": "Snapshot slots",
                "type": "quantity",
                "min": 0,
                "max": 10,
                "step": 1,
                "currentValue": 3,
                "includedValue": 0,
                "unitPrice": {"amount": "1.50", "currencyCode": "EUR", "billingCycle": "monthly"},
            }
        ],
        "availablePlans": [
            {
                "id": "vps-s",
                "name": "VPS S",
                "price": {"amount": "5.00", "currencyCode": "EUR", "billingCycle": "monthly"},
                "snapshotSlots": 1,
                "isCurrent": False,
            },
            {
                "id": "vps-m",
                "name": "VPS M",
                "price": {"amount": "12.00", "currencyCode": "EUR", "billingCycle": "monthly"},
                "snapshotSlots": 3,
                "isCurrent": False,
            },
        ],
    }
    nosnap = (await capi.upgrade("demo-nosnap")).json()
    assert nosnap["configurableOptions"][0]["currentValue"] == 0


# -- POST /actions/config ------------------------------------------------------------------------


async def test_preview_changes_nothing(capi: CapacityApi) -> None:
    response = await capi.config(
        {"resources": {"snapshotSlots": 5}, "dryRun": True, "billingCycle": "monthly"}
    )
    assert response.status_code == 200, response.text
    assert response.json() == {
        "dryRun": True,
        "resources": {"snapshotSlots": 5},
        "priceChange": {
            "amount": "3.00",
            "recurringAmount": "7.50",
            "additionalRecurringAmount": "3.00",
            "currencyCode": "EUR",
            "billingCycle": "monthly",
        },
        "paymentInvoice": None,
        "actions": {"canCommit": {"allowed": True, "reason": None, "code": None}},
    }
    assert (await capi.limits())["totalSnapshots"] == 3
    assert capi.receiver.deliveries == []


async def test_commit_is_confirmed_by_billing_and_applies_at_once(capi: CapacityApi) -> None:
    response = await capi.config({"resources": {"snapshotSlots": 1}}, vps="demo-nosnap")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["dryRun"] is False
    assert body["resources"] == {"snapshotSlots": 1}
    assert body["priceChange"]["amount"] == "1.50"
    assert body["actions"]["canCommit"]["allowed"] is True

    [delivery] = capi.receiver.deliveries
    assert delivery.signature_is_valid()
    payload = delivery.json()
    assert payload["event"] == "vps.snapshot_slots.changed"
    assert (payload["vpsId"], payload["from"], payload["to"]) == (
        capi.vps_ids["demo-nosnap"],
        0,
        1,
    )
    assert payload["priceChange"]["recurringAmount"] == "1.50"
    assert delivery.headers["webhook-id"].startswith("msg_")
    assert payload["id"].startswith("chg_")

    # The new slot is there at once: the snapshot list shows it and a snapshot can be taken.
    assert await capi.limits("demo-nosnap") == {
        "totalSnapshots": 1,
        "usedSnapshots": 0,
        "remainingSnapshots": 1,
    }
    await capi.take_snapshot("first", vps="demo-nosnap")
    assert (await capi.limits("demo-nosnap"))["usedSnapshots"] == 1


async def test_shrinking_below_the_snapshots_in_use_is_409(capi: CapacityApi) -> None:
    await capi.take_snapshot("first")
    await capi.take_snapshot("second")

    preview = await capi.config({"resources": {"snapshotSlots": 1}, "dryRun": True})
    assert preview.status_code == 200
    gate = preview.json()["actions"]["canCommit"]
    assert (gate["allowed"], gate["code"]) == (False, "snapshot_slots_in_use")
    assert preview.json()["priceChange"]["additionalRecurringAmount"] == "-3.00"

    response = await capi.config({"resources": {"snapshotSlots": 1}})
    body = assert_problem(response, 409, "snapshot_slots_in_use")
    assert body["extensions"] == {
        "totalSnapshots": 3,
        "usedSnapshots": 2,
        "requestedSnapshots": 1,
        "deleteAtLeast": 1,
        "snapshotsInUse": ["first", "second"],
    }
    assert "first, second" in str(body["detail"])
    assert capi.receiver.deliveries == []  # refused before billing is asked
    assert (await capi.limits())["totalSnapshots"] == 3

    shrunk = await capi.config({"resources": {"snapshotSlots": 2}})
    assert shrunk.status_code == 200, shrunk.text
    assert shrunk.json()["priceChange"]["amount"] == "0.00"
    assert await capi.limits() == {
        "totalSnapshots": 2,
        "usedSnapshots": 2,
        "remainingSnapshots": 0,
    }


# Each body with the (pointer, code) pairs of its `errors`. One test, one demo set-up for all.
INVALID_BODIES: list[tuple[dict[str, Any], list[tuple[str, str]]]] = [
    (
        {"resources": {"snapshotSlots": 11}},
        [("/resources/snapshotSlots", "out_of_range")],
    ),
    (
        {"resources": {"snapshotSlots": -1}, "dryRun": True},
        [("/resources/snapshotSlots", "out_of_range")],
    ),
    (
        {"resources": {"snapshotSlots": 4, "cpuCores": 2}},
        [("/resources/cpuCores", "unknown_field")],
    ),
    ({"resources": {"snapshotSlots": "4"}}, [("/resources/snapshotSlots", "invalid_type")]),
    ({"resources": {"snapshotSlots": True}}, [("/resources/snapshotSlots", "invalid_type")]),
    ({"resources": {}}, [("/resources/snapshotSlots", "missing_required")]),
    ({"dryRun": True}, [("/resources", "missing_required")]),
    (
        {"resources": {"snapshotSlots": 4}, "dry_run": True},
        [("/dry_run", "unknown_field")],
    ),
    (
        {"resources": {"snapshotSlots": 4}, "billingCycle": "monthly"},
        [("/billingCycle", "not_allowed")],
    ),
    (
        {"resources": {"snapshotSlots": 4}, "dryRun": True, "billingCycle": "annually"},
        [("/billingCycle", "out_of_range")],
    ),
]


async def test_invalid_requests_are_400_with_pointers(capi: CapacityApi) -> None:
    for body, errors in INVALID_BODIES:
        response = await capi.config(body)
        assert_problem(response, 400, "invalid_request")
        pairs = [(e["pointer"], e["code"]) for e in response.json()["errors"]]
        assert pairs == errors, (body, response.json())
    assert (await capi.limits())["totalSnapshots"] == 3
    assert capi.receiver.deliveries == []


async def test_a_read_only_key_cannot_configure(capi: CapacityApi) -> None:
    response = await capi.config({"resources": {"snapshotSlots": 5}}, token="readonly")
    body = assert_problem(response, 403, "forbidden")
    assert body["extensions"] == {"requiredScopes": ["write:vm"]}
    backup_only = await capi.runtime.services.credentials.issue(
        "demo", frozenset({Scope.BACKUP_VM, Scope.READ_VM})
    )
    response = await capi.client.post(
        capi.path("demo-web", "actions/config"),
        json={"resources": {"snapshotSlots": 5}, "dryRun": True},
        headers={"Authorization": f"Bearer {backup_only.secret}"},
    )
    assert_problem(response, 403, "forbidden")
    write_vm = await capi.runtime.services.credentials.issue("demo", frozenset({Scope.WRITE_VM}))
    response = await capi.client.post(
        capi.path("demo-web", "actions/config"),
        json={"resources": {"snapshotSlots": 5}, "dryRun": True},
        headers={"Authorization": f"Bearer {write_vm.secret}"},
    )
    assert response.status_code == 200, response.text
    assert (await capi.limits())["totalSnapshots"] == 3


async def test_no_credentials_is_401(capi: CapacityApi) -> None:
    assert_problem(
        await capi.client.get(capi.path("demo-web", "actions/upgrade")), 401, "unauthorized"
    )
    response = await capi.client.post(
        capi.path("demo-web", "actions/config"), json={"resources": {"snapshotSlots": 5}}
    )
    assert_problem(response, 401, "unauthorized")


async def test_another_accounts_vps_is_404(capi: CapacityApi) -> None:
    assert_problem(await capi.upgrade(token="other"), 404, "vps_not_found")
    response = await capi.config({"resources": {"snapshotSlots": 5}}, token="other")
    assert_problem(response, 404, "vps_not_found")
    missing = await capi.client.get(
        "/api/v2/vps/vps_01hxa3b4c5d6e7f8g9h0j1k2m3/actions/upgrade", headers=capi.auth()
    )
    assert_problem(missing, 404, "vps_not_found")
    assert (await capi.limits())["totalSnapshots"] == 3
    assert capi.receiver.deliveries == []


@pytest.mark.parametrize("failure", ["status-500", "timeout"])
async def test_a_failing_webhook_fails_the_commit_with_nothing_applied(
    capi: CapacityApi, failure: str
) -> None:
    if failure == "timeout":
        capi.receiver.hang = True  # the fixture's timeout is 2 s
    else:
        capi.receiver.status = 500
    response = await capi.config({"resources": {"snapshotSlots": 6}})
    body = assert_problem(response, 503, "billing_unavailable")
    assert "nothing was changed" in str(body["detail"])
    assert "127.0.0.1" not in response.text  # the billing system's address stays private
    assert len(capi.receiver.deliveries) == 1
    assert (await capi.limits())["totalSnapshots"] == 3
    upgrade = (await capi.upgrade()).json()
    assert upgrade["configurableOptions"][0]["currentValue"] == 3


async def test_the_operations_are_in_the_openapi_document(capi: CapacityApi) -> None:
    document = (await capi.client.get("/openapi.json")).json()
    upgrade = document["paths"]["/api/v2/vps/{vps_id}/actions/upgrade"]["get"]
    config = document["paths"]["/api/v2/vps/{vps_id}/actions/config"]["post"]
    assert upgrade["operationId"] == "getUpgradeOptions"
    assert config["operationId"] == "configureVps"
    assert {"400", "403", "404", "409", "503"} <= set(config["responses"])
