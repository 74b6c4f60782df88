"""The panel's words for a failed job, what an operator may do, and power actions with their
confirmation (real app, store, qemu-img; no VM is started)."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
from typing import Any

from tests.conftest import Api
from vpsnap.domain.users import Role

from .support import SAME_ORIGIN, csrf_token, panel_client


def job_events(stream: str) -> list[dict[str, Any]]:
    """The ``job`` events of a Server-Sent Events body, decoded."""
    found = []
    for block in stream.replace("\r\n", "\n").split("\n\n"):
        lines = block.strip().splitlines()
        if "event: job" in lines:
            data = next(line for line in lines if line.startswith("data: "))
            found.append(json.loads(data.removeprefix("data: ")))
    return found


DEMO = "demo@example.com"
OPERATOR = "ops@example.com"
OPERATOR_PASSWORD = "operator passphrase"


async def test_a_failed_job_shows_its_problem_in_words(api: Api) -> None:
    """A snapshot of that name exists on the disk but vpsnap did not make it: the create job
    fails with snapshot_name_taken, and the page says so in the problem's words."""
    vps_id = api.vps_ids["demo-db"]
    await asyncio.to_thread(
        subprocess.run,
        ["qemu-img", "snapshot", "-c", "on-disk", str(api.disk("demo-db"))],
        check=True,
        timeout=30,
    )
    async with panel_client(api, DEMO) as client:
        token = await csrf_token(client)
        await client.post(
            f"/vps/{vps_id}/snapshots",
            data={"csrf_token": token, "name": "on-disk"},
            headers=SAME_ORIGIN,
        )
        events = await client.get(f"/vps/{vps_id}/events")
        page = await client.get(f"/vps/{vps_id}")
        history = await client.get(f"/vps/{vps_id}/jobs")

    failed = [e for e in job_events(events.text) if e["status"] == "failed"]
    assert len(failed) == 1
    assert failed[0]["title"] == "Create snapshot on-disk"
    assert failed[0]["statusText"] == "Failed"
    assert failed[0]["errorTitle"] == "Snapshot name taken"
    assert failed[0]["errorDetail"]
    item = re.search(r'<li data-job-id="[^"]+" data-job-status="failed".*?</li>', page.text, re.S)
    assert item is not None
    assert "Create snapshot on-disk" in item.group(0)
    assert "<strong>Snapshot name taken</strong>:" in item.group(0)
    assert 'data-snapshot="on-disk"' not in page.text  # the failed create left no row
    assert "Slots: 0 of 1 used" in page.text  # and its slot is free
    assert "<strong>Snapshot name taken</strong>" in history.text


async def test_an_operator_takes_snapshots_and_powers_but_changes_no_settings(api: Api) -> None:
    await api.runtime.services.users.create("demo", OPERATOR, Role.OPERATOR, OPERATOR_PASSWORD)
    api.tokens["users"][OPERATOR] = OPERATOR_PASSWORD
    vps_id = api.vps_ids["demo-web"]
    async with panel_client(api, OPERATOR) as client:
        token = await csrf_token(client)
        page = await client.get(f"/vps/{vps_id}")
        created = await client.post(
            f"/vps/{vps_id}/snapshots",
            data={"csrf_token": token, "name": "by-operator"},
            headers=SAME_ORIGIN,
        )
        schedule = await client.post(
            f"/vps/{vps_id}/schedule",
            data={"csrf_token": token, "enabled": "on", "interval_hours": "6"},
            headers=SAME_ORIGIN,
        )
        slots = await client.post(
            f"/vps/{vps_id}/slots/preview",
            data={"csrf_token": token, "slots": "5"},
            headers=SAME_ORIGIN,
        )
        keys = await client.get("/keys")

    assert "Create snapshot</button>" in page.text
    assert 'href="/keys"' not in page.text
    assert created.status_code == 303
    assert schedule.status_code == 403
    assert "Your role (operator) cannot change the snapshot schedule." in schedule.text
    assert slots.status_code == 403
    assert keys.status_code == 403


async def test_power_actions_are_confirmed_and_queued_as_jobs(api: Api) -> None:
    vps_id = api.vps_ids["demo-web"]  # a managed VM, not running in this fixture
    async with panel_client(api, DEMO) as client:
        token = await csrf_token(client)
        page = await client.get(f"/vps/{vps_id}")
        confirm = await client.get(f"/vps/{vps_id}/power/stop")
        reset = await client.get(f"/vps/{vps_id}/power/reset")
        stopped = await client.post(
            f"/vps/{vps_id}/power/stop", data={"csrf_token": token}, headers=SAME_ORIGIN
        )
        events = await client.get(f"/vps/{vps_id}/events")
        after = await client.get(f"/vps/{vps_id}")

    assert "Include memory" not in page.text  # offered only while the VM runs
    vm = await api.runtime.services.accounts.find_vps("demo", "demo-web")
    assert vm is not None
    if vm.machine is None:  # no qemu-system-x86_64: the page says there is nothing to power
        assert "registered with its disks only" in page.text
        return
    assert '<a class="button danger" href="/vps/' in page.text
    assert ">Start</button>" in page.text
    assert "like pulling the plug" in confirm.text
    assert reset.status_code == 404  # the panel offers what the issue lists
    assert stopped.status_code == 303
    finished = [e for e in job_events(events.text) if e["done"]]
    assert [e["title"] for e in finished] == ["Power: stop"]
    assert finished[0]["status"] == "completed"
    assert "Power: stop" in after.text
