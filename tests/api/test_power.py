"""Power actions through the real app: 202 + job, scopes, ownership, bodies, refusals.

The VM behind them is the FakeDriver's (the live qemu and libvirt drivers have their own tests
on real VMs); what is checked here is the HTTP surface and the job plumbing.
"""

from __future__ import annotations

import pytest

from tests.api.test_errors import assert_problem
from tests.conftest import Api
from vpsnap.domain.model import LaunchSpec, PowerState
from vpsnap.drivers.fake import FakeDriver
from vpsnap.services.accounts import NewVps

ACTIONS = ("start", "shutdown", "stop", "restart", "reset")


@pytest.fixture
def api_driver() -> FakeDriver:
    return FakeDriver()


@pytest.fixture
async def vm(api: Api) -> str:
    """A VPS of the demo account with a (fake) VM, stopped."""
    vps = await api.runtime.services.accounts.add_vps(
        NewVps(
            account_name="demo",
            name="demo-vm",
            disks=(str(api.disk("demo-vm")),),  # its own disk file (the fake driver's)
            snapshot_slots=2,
            machine=LaunchSpec(memory_mib=128, cpus=1),
        )
    )
    return vps.id


def _path(vps_id: str, action: str) -> str:
    return f"/api/v2/vps/{vps_id}/actions/{action}"


async def test_start_then_stop_through_jobs(api: Api, vm: str, api_driver: FakeDriver) -> None:
    response = await api.client.post(_path(vm, "start"), headers=api.auth())
    assert response.status_code == 202, response.text
    operation = response.json()["operation"]
    assert operation["result"] == {"action": "start"}
    assert response.headers["location"] == operation["pollUrl"]
    job = await api.wait_job(operation["jobId"])
    assert job["status"] == "completed"
    assert job["type"] == "vps.power"
    assert job["result"] == {
        "action": "start",
        "powerStateBefore": "stopped",
        "powerStateAfter": "running",
    }
    shown = await api.client.get(f"/api/v2/vps/{vm}", headers=api.auth())
    assert shown.json()["powerState"] == "running"

    response = await api.client.post(_path(vm, "stop"), headers=api.auth(), json={})
    assert response.status_code == 202, response.text
    job = await api.wait_job(response.json()["operation"]["jobId"])
    assert job["result"]["powerStateAfter"] == "stopped"  # type: ignore[index]


async def test_restart_takes_force(api: Api, vm: str, api_driver: FakeDriver) -> None:
    api_driver.set_power_state(vm, PowerState.RUNNING)
    response = await api.client.post(_path(vm, "restart"), headers=api.auth(), json={"force": True})
    assert response.status_code == 202, response.text
    job = await api.wait_job(response.json()["operation"]["jobId"])
    assert job["status"] == "completed"
    assert job["result"] == {
        "action": "restart",
        "powerStateBefore": "running",
        "powerStateAfter": "running",
    }


@pytest.mark.parametrize("action", ACTIONS)
async def test_every_action_needs_the_power_scope(api: Api, vm: str, action: str) -> None:
    response = await api.client.post(_path(vm, action), headers=api.auth("readonly"))
    assert_problem(response, 403, "forbidden")
    assert response.json()["extensions"]["requiredScopes"] == ["power:vm"]


@pytest.mark.parametrize("action", ACTIONS)
async def test_another_accounts_vps_answers_404(api: Api, vm: str, action: str) -> None:
    response = await api.client.post(_path(vm, action), headers=api.auth("other"))
    assert_problem(response, 404, "vps_not_found")


async def test_a_disk_only_vps_is_refused_at_once(api: Api) -> None:
    response = await api.client.post(_path(api.vps_ids["demo-db"], "start"), headers=api.auth())
    assert_problem(response, 409, "vps_not_ready")
    assert "disk images only" in response.json()["detail"]


async def test_force_is_only_for_restart(api: Api, vm: str) -> None:
    response = await api.client.post(_path(vm, "stop"), headers=api.auth(), json={"force": True})
    assert_problem(response, 400, "invalid_request")
    assert response.json()["errors"][0]["pointer"] == "/force"


async def test_force_must_be_a_boolean(api: Api, vm: str) -> None:
    response = await api.client.post(
        _path(vm, "restart"), headers=api.auth(), json={"force": "yes please"}
    )
    assert_problem(response, 400, "invalid_request")


async def test_unknown_action_and_wrong_method(api: Api, vm: str) -> None:
    assert_problem(
        await api.client.post(_path(vm, "hibernate"), headers=api.auth()), 404, "not_found"
    )
    response = await api.client.get(_path(vm, "start"), headers=api.auth())
    assert_problem(response, 405, "method_not_allowed")


async def test_operation_ids_are_stable(api: Api) -> None:
    spec = (await api.client.get("/openapi.json")).json()
    ids = {
        op["operationId"]
        for path, item in spec["paths"].items()
        if "/actions/" in path
        for op in item.values()
    }
    assert {"startVps", "shutdownVps", "stopVps", "restartVps", "resetVps"} <= ids


@pytest.mark.parametrize("api_overrides", [{"max_jobs_per_vps": 2}])
@pytest.mark.parametrize("api_worker", [False])
async def test_a_full_vps_queue_answers_429_with_retry_after(api: Api) -> None:
    """Issue 9, kind 11c: 192 queued power calls on one VPS made about 3 hours of queue. A
    VPS's queue is bounded; the request beyond it is refused with a code and records nothing."""
    vps = api.vps_ids["demo-web"]
    for _ in range(2):
        response = await api.client.post(f"/api/v2/vps/{vps}/actions/stop", headers=api.auth())
        assert response.status_code == 202, response.text
    refused = await api.client.post(
        f"/api/v2/vps/{vps}/snapshots", json={"name": "late"}, headers=api.auth()
    )
    assert refused.status_code == 429
    assert refused.headers["content-type"] == "application/problem+json"
    body = refused.json()
    assert body["code"] == "vps_queue_full"
    assert int(refused.headers["Retry-After"]) >= 1
    assert body["extensions"]["maxJobs"] == 2
    listing = await api.client.get(f"/api/v2/vps/{vps}/snapshots", headers=api.auth())
    assert listing.json()["data"] == []
