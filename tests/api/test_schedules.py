"""``/api/v2/vps/{id}/snapshot-schedules`` through the real app (contract section 8): shapes,
scopes, ownership, validation, and scheduled runs on real qcow2 disks."""

from __future__ import annotations

from datetime import datetime, timedelta

import httpx
import pytest

from tests.api.test_errors import assert_problem
from tests.conftest import Api
from tests.support import ManualClock
from vpsnap.domain.clock import format_timestamp
from vpsnap.domain.schedules import scheduled_name
from vpsnap.drivers.qemu_img import QemuImg
from vpsnap.scheduler.schedules import run_due_schedules

pytestmark = pytest.mark.qemu

ROUTE = "/api/v2/vps/{vps_id}/snapshot-schedules"


@pytest.fixture
def client(api: Api) -> httpx.AsyncClient:
    return api.client


def _path(api: Api, vps: str = "demo-web") -> str:
    return ROUTE.format(vps_id=api.vps_ids[vps])


def _parse(timestamp: str) -> datetime:
    return datetime.fromisoformat(timestamp.replace("Z", "+00:00"))


def _due(state: dict[str, dict[str, str]]) -> datetime:
    """A moment at which the schedule is due (``nextRunAt`` is shown to the millisecond, the
    stored time has microseconds)."""
    return _parse(state["schedule"]["nextRunAt"]) + timedelta(milliseconds=1)


async def _run_at(api: Api, moment: datetime) -> str:
    """Queue the schedule runs due at ``moment`` (the server's own clock is real time) and
    wait for the one job to end."""
    [job_id] = await run_due_schedules(
        api.runtime.store,
        api.runtime.events,
        ManualClock(moment),
        retention=timedelta(hours=api.runtime.settings.retention_hours),
    )
    job = await api.wait_job(job_id)
    assert job["status"] == "completed", job
    return job_id


async def test_get_without_a_schedule(api: Api, client: httpx.AsyncClient) -> None:
    response = await client.get(_path(api), headers=api.auth())

    assert response.status_code == 200
    assert response.json() == {
        "schedule": None,
        "limits": {"totalSnapshots": 3, "usedSnapshots": 0, "remainingSnapshots": 3},
        "available": True,
        "reason": None,
        "actions": {"canEnable": {"allowed": True, "reason": None, "code": None}},
    }


async def test_post_sets_the_schedule_and_get_returns_it(
    api: Api, client: httpx.AsyncClient
) -> None:
    before = datetime.now().astimezone()
    response = await client.post(
        _path(api), json={"enabled": True, "intervalHours": 6.9}, headers=api.auth()
    )

    assert response.status_code == 200, response.text
    body = response.json()
    schedule = body["schedule"]
    assert set(schedule) == {
        "enabled",
        "intervalHours",
        "nextRunAt",
        "lastRunAt",
        "lastRunStatus",
        "createdAt",
        "updatedAt",
    }
    assert schedule["enabled"] is True
    assert schedule["intervalHours"] == 6
    assert (schedule["lastRunAt"], schedule["lastRunStatus"]) == (None, None)
    assert schedule["createdAt"] == schedule["updatedAt"]
    assert schedule["createdAt"].endswith("Z")
    assert len(schedule["createdAt"]) == 24
    created = _parse(schedule["createdAt"])
    assert before - timedelta(seconds=1) <= created <= datetime.now().astimezone()
    assert _parse(schedule["nextRunAt"]) == created + timedelta(hours=6)
    assert body["actions"] == {"canEnable": {"allowed": True, "reason": None, "code": None}}
    assert (await client.get(_path(api), headers=api.auth())).json() == body

    disabled = await client.post(
        _path(api), json={"enabled": False, "intervalHours": 6}, headers=api.auth()
    )
    assert disabled.status_code == 200
    assert disabled.json()["schedule"]["enabled"] is False
    assert disabled.json()["schedule"]["nextRunAt"] is None


async def test_delete_answers_204_and_removes_the_schedule(
    api: Api, client: httpx.AsyncClient
) -> None:
    await client.post(_path(api), json={"enabled": True, "intervalHours": 4}, headers=api.auth())

    deleted = await client.delete(_path(api), headers=api.auth())

    assert deleted.status_code == 204
    assert deleted.content == b""
    assert (await client.get(_path(api), headers=api.auth())).json()["schedule"] is None
    # Deleting what is gone is the same end state: 204 again.
    assert (await client.delete(_path(api), headers=api.auth())).status_code == 204


async def test_a_read_only_key_reads_but_cannot_change(api: Api, client: httpx.AsyncClient) -> None:
    readonly = api.auth("readonly")

    got = await client.get(_path(api), headers=readonly)
    assert got.status_code == 200
    assert got.json()["actions"]["canEnable"]["allowed"] is False
    assert got.json()["actions"]["canEnable"]["code"] == "forbidden"

    posted = await client.post(
        _path(api), json={"enabled": True, "intervalHours": 4}, headers=readonly
    )
    problem = assert_problem(posted, 403, "forbidden")
    assert problem["extensions"] == {"requiredScopes": ["write:vm"]}
    assert_problem(await client.delete(_path(api), headers=readonly), 403, "forbidden")
    assert (await client.get(_path(api), headers=api.auth())).json()["schedule"] is None


async def test_another_accounts_vps_is_not_found(api: Api, client: httpx.AsyncClient) -> None:
    await client.post(_path(api), json={"enabled": True, "intervalHours": 4}, headers=api.auth())
    other = api.auth("other")

    assert_problem(await client.get(_path(api), headers=other), 404, "vps_not_found")
    assert_problem(
        await client.post(_path(api), json={"enabled": False, "intervalHours": 4}, headers=other),
        404,
        "vps_not_found",
    )
    assert_problem(await client.delete(_path(api), headers=other), 404, "vps_not_found")
    # ...answered exactly like a VPS that does not exist at all.
    missing = ROUTE.format(vps_id="vps_01hxa3b4c5d6e7f8g9h0j1k2m3")
    assert_problem(await client.get(missing, headers=other), 404, "vps_not_found")
    assert (await client.get(_path(api), headers=api.auth())).json()["schedule"]["enabled"] is True


async def test_without_slots_enabling_is_409(api: Api, client: httpx.AsyncClient) -> None:
    path = _path(api, "demo-nosnap")

    got = (await client.get(path, headers=api.auth())).json()
    assert got["available"] is False
    assert "actions/upgrade" in got["reason"]
    assert got["limits"] == {"totalSnapshots": 0, "usedSnapshots": 0, "remainingSnapshots": 0}
    assert got["actions"]["canEnable"]["code"] == "snapshots_not_included"

    refused = await client.post(
        path, json={"enabled": True, "intervalHours": 4}, headers=api.auth()
    )
    assert_problem(refused, 409, "snapshots_not_included")
    assert (await client.get(path, headers=api.auth())).json()["schedule"] is None
    allowed = await client.post(
        path, json={"enabled": False, "intervalHours": 4}, headers=api.auth()
    )
    assert allowed.status_code == 200
    assert allowed.json()["schedule"]["enabled"] is False


@pytest.mark.parametrize(
    ("body", "pointer", "field_code"),
    [
        ({"enabled": True, "intervalHours": "six"}, "/intervalHours", "invalid_type"),
        ({"enabled": True, "intervalHours": "6"}, "/intervalHours", "invalid_type"),
        ({"enabled": True, "intervalHours": None}, "/intervalHours", "invalid_type"),
        ({"enabled": True, "intervalHours": True}, "/intervalHours", "invalid_type"),
        ({"enabled": "yes", "intervalHours": 6}, "/enabled", "invalid_type"),
        ({"enabled": 1, "intervalHours": 6}, "/enabled", "invalid_type"),
        ({"intervalHours": 6}, "/enabled", "missing_required"),
        ({"enabled": True}, "/intervalHours", "missing_required"),
        (
            {"enabled": True, "intervalHours": 6, "interval_hours": 6},
            "/interval_hours",
            "unknown_field",
        ),
        ({"enabled": True, "intervalHours": 6, "retention": 48}, "/retention", "unknown_field"),
    ],
)
async def test_invalid_bodies_point_at_the_field(
    api: Api,
    client: httpx.AsyncClient,
    body: dict[str, object],
    pointer: str,
    field_code: str,
) -> None:
    response = await client.post(_path(api), json=body, headers=api.auth())

    problem = assert_problem(response, 400, "invalid_request")
    errors = problem["errors"]
    assert isinstance(errors, list)
    assert {"pointer": pointer, "code": field_code} in [
        {"pointer": e["pointer"], "code": e["code"]} for e in errors
    ], errors
    assert (await client.get(_path(api), headers=api.auth())).json()["schedule"] is None


async def test_a_non_finite_interval_is_invalid(api: Api, client: httpx.AsyncClient) -> None:
    # Python's JSON parser accepts NaN and Infinity; the schedule must not.
    for raw in (
        b'{"enabled": true, "intervalHours": NaN}',
        b'{"enabled": true, "intervalHours": Infinity}',
    ):
        response = await client.post(
            _path(api),
            content=raw,
            headers={**api.auth(), "Content-Type": "application/json"},
        )
        problem = assert_problem(response, 400, "invalid_request")
        errors = problem["errors"]
        assert isinstance(errors, list)
        assert [e["pointer"] for e in errors] == ["/intervalHours"]


async def test_the_operations_have_stable_ids(api: Api, client: httpx.AsyncClient) -> None:
    spec = (await client.get("/openapi.json")).json()

    operations = spec["paths"][ROUTE]
    assert {method: op["operationId"] for method, op in operations.items()} == {
        "get": "getSnapshotSchedule",
        "post": "putSnapshotSchedule",
        "delete": "deleteSnapshotSchedule",
    }


async def test_scheduled_runs_take_and_rotate_snapshots_on_the_disk(
    api: Api, client: httpx.AsyncClient
) -> None:
    path = _path(api, "demo-db")  # one slot
    vps_id = api.vps_ids["demo-db"]
    disk = api.disk("demo-db")
    qemu_img = QemuImg()
    enabled = await client.post(
        path, json={"enabled": True, "intervalHours": 4}, headers=api.auth()
    )
    first_run = _due(enabled.json())

    first_job = await _run_at(api, first_run)

    first_name = scheduled_name(first_run)
    assert first_name.startswith("auto-")
    assert [s.name for s in (await qemu_img.info(disk)).snapshots] == [first_name]
    job = (await client.get(f"/api/jobs/{first_job}", headers=api.auth())).json()
    assert job["type"] == "snapshot.scheduled"
    assert job["snapshotName"] == first_name
    assert job["result"] == {"name": first_name, "replaced": None}
    listing = (await client.get(f"/api/v2/vps/{vps_id}/snapshots", headers=api.auth())).json()
    [snapshot] = listing["data"]
    assert (snapshot["name"], snapshot["origin"], snapshot["status"]) == (
        first_name,
        "scheduled",
        "available",
    )
    state = (await client.get(path, headers=api.auth())).json()
    assert state["schedule"]["lastRunStatus"] == "ok"
    # The grid stays on the stored time, not on when the run happened.
    assert _parse(state["schedule"]["nextRunAt"]) == _parse(
        enabled.json()["schedule"]["nextRunAt"]
    ) + timedelta(hours=4)
    assert state["limits"]["usedSnapshots"] == 1

    # The only slot holds a scheduled snapshot: the next run replaces it.
    second_run = first_run + timedelta(hours=4)
    second_job = await _run_at(api, second_run)

    second_name = scheduled_name(second_run)
    assert [s.name for s in (await qemu_img.info(disk)).snapshots] == [second_name]
    job = (await client.get(f"/api/jobs/{second_job}", headers=api.auth())).json()
    assert job["result"] == {"name": second_name, "replaced": first_name}
    listing = (await client.get(f"/api/v2/vps/{vps_id}/snapshots", headers=api.auth())).json()
    assert [(s["name"], s["origin"]) for s in listing["data"]] == [(second_name, "scheduled")]


async def test_a_run_never_replaces_a_manual_snapshot_on_the_disk(
    api: Api, client: httpx.AsyncClient
) -> None:
    path = _path(api, "demo-db")  # one slot
    created = await client.post(
        f"/api/v2/vps/{api.vps_ids['demo-db']}/snapshots", json={"name": "mine"}, headers=api.auth()
    )
    await api.wait_job(created.json()["operation"]["jobId"])
    enabled = await client.post(
        path, json={"enabled": True, "intervalHours": 4}, headers=api.auth()
    )
    run_at = _due(enabled.json())

    queued = await run_due_schedules(
        api.runtime.store,
        api.runtime.events,
        ManualClock(run_at),
        retention=timedelta(hours=24),
    )

    assert queued == []
    state = (await client.get(path, headers=api.auth())).json()
    assert state["schedule"]["lastRunStatus"] == "skipped: all 1 slots hold manual snapshots"
    assert state["schedule"]["lastRunAt"] == format_timestamp(run_at)
    assert [s.name for s in (await QemuImg().info(api.disk("demo-db"))).snapshots] == ["mine"]
