"""Bounded concurrent load on a real ``vpsnap serve`` (issue 9, kind 9): no load makes a 5xx,
and the invariants hold afterwards.

30 clients for 10 s against the embedded server on SQLite (the default), mixing reads
(inventory, one VPS, snapshot lists, jobs) with creates, deletes and restores on the demo
VPSes of two accounts. Asserted: no answer is a 5xx and none crashed in the server (its log has
no ``request_crashed``); afterwards, when every job has ended, no VPS holds more snapshots than
slots, and the database and the disks agree (every available snapshot is on its disk, nothing
on a disk lacks a row).
"""

from __future__ import annotations

import asyncio
import collections
import json
import random
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from tests.live_server import ServerProcess

pytestmark = [pytest.mark.qemu, pytest.mark.slow]

CLIENTS = 30
SECONDS = 10.0


def disk_snapshots(disk: Path) -> set[str]:
    out = subprocess.run(
        ["qemu-img", "info", "-U", "--output=json", str(disk)],
        capture_output=True,
        check=True,
        timeout=60,
    )
    return {s["name"] for s in json.loads(out.stdout).get("snapshots", [])}


async def _client(
    http: httpx.AsyncClient,
    index: int,
    vps_ids: list[str],
    deadline: float,
    statuses: collections.Counter[tuple[str, str, int]],
    server_errors: list[str],
) -> None:
    rnd = random.Random(index)
    count = 0

    def seen(response: httpx.Response, what: str) -> httpx.Response:
        statuses[(response.request.method, what, response.status_code)] += 1
        if response.status_code >= 500:
            server_errors.append(
                f"{response.request.method} {response.request.url}: {response.text}"
            )
        return response

    while time.monotonic() < deadline:
        count += 1
        vps = rnd.choice(vps_ids)
        roll = rnd.random()
        if roll < 0.3:
            seen(await http.get("/api/v2/vps", params={"limit": rnd.choice([1, 2, 20])}), "list")
        elif roll < 0.45:
            seen(await http.get(f"/api/v2/vps/{vps}"), "vps")
        elif roll < 0.65:
            seen(await http.get(f"/api/v2/vps/{vps}/snapshots"), "snapshots")
        elif roll < 0.8:
            created = seen(
                await http.post(f"/api/v2/vps/{vps}/snapshots", json={"name": f"l{index}-{count}"}),
                "create",
            )
            if created.status_code == 202 and rnd.random() < 0.5:
                job = created.json()["operation"]["jobId"]
                seen(await http.get(f"/api/jobs/{job}", headers={"Prefer": "wait=2"}), "job")
        else:
            listing = seen(await http.get(f"/api/v2/vps/{vps}/snapshots"), "snapshots")
            available = [s["name"] for s in listing.json()["data"] if s["status"] == "available"]
            if not available:
                continue
            name = rnd.choice(available)
            if roll < 0.93:
                seen(await http.delete(f"/api/v2/vps/{vps}/snapshots/{name}"), "delete")
            else:
                seen(
                    await http.post(f"/api/v2/vps/{vps}/snapshots/{name}/actions/restore"),
                    "restore",
                )


async def _load(
    server: ServerProcess, keys: dict[str, str]
) -> tuple[collections.Counter[tuple[str, str, int]], list[str]]:
    statuses: collections.Counter[tuple[str, str, int]] = collections.Counter()
    server_errors: list[str] = []
    limits = httpx.Limits(max_connections=CLIENTS + 5)
    async with (
        httpx.AsyncClient(
            base_url=server.url,
            headers={"Authorization": f"Bearer {keys['full']}"},
            timeout=60,
            limits=limits,
        ) as demo,
        httpx.AsyncClient(
            base_url=server.url,
            headers={"Authorization": f"Bearer {keys['other']}"},
            timeout=60,
            limits=limits,
        ) as other,
    ):
        demo_vps = [v["id"] for v in (await demo.get("/api/v2/vps")).json()["data"]]
        other_vps = [v["id"] for v in (await other.get("/api/v2/vps")).json()["data"]]
        deadline = time.monotonic() + SECONDS
        await asyncio.gather(
            *(
                _client(
                    other if i % 5 == 0 else demo,
                    i,
                    other_vps if i % 5 == 0 else demo_vps,
                    deadline,
                    statuses,
                    server_errors,
                )
                for i in range(CLIENTS)
            )
        )
    return statuses, server_errors


def _settled(server: ServerProcess, key: str, timeout: float = 120.0) -> list[dict[str, object]]:
    """Every VPS of the key's account with its snapshot list, once no snapshot is in motion."""
    deadline = time.monotonic() + timeout
    headers = {"Authorization": f"Bearer {key}"}
    while True:
        vpses = httpx.get(f"{server.url}/api/v2/vps", headers=headers, timeout=30).json()["data"]
        listings = [
            {
                "vps": v,
                **httpx.get(
                    f"{server.url}/api/v2/vps/{v['id']}/snapshots", headers=headers, timeout=30
                ).json(),
            }
            for v in vpses
        ]
        moving = [
            s
            for listing in listings
            for s in listing["data"]  # type: ignore[attr-defined]
            if s["status"] in ("creating", "deleting", "restoring")
        ]
        if not moving:
            return listings
        assert time.monotonic() < deadline, f"snapshots still in motion: {moving}"
        time.sleep(0.5)


def test_concurrent_clients_get_no_5xx_and_the_invariants_hold(tmp_path: Path) -> None:
    server = ServerProcess(
        tmp_path,
        "--demo",
        env={
            "VPSNAP_LOG_LEVEL": "info",
            "VPSNAP_DEMO_VM": "false",  # a managed VM would outlive the test
            "VPSNAP_RATE_LIMIT_PER_KEY": "1000000/minute",
            "VPSNAP_RATE_LIMIT_PER_IP": "1000000/minute",
            "VPSNAP_RATE_LIMIT_SNAPSHOT_MUTATIONS_PER_VPS": "1000000/minute",
        },
    )
    try:
        keys = json.loads((tmp_path / "demo-tokens.json").read_text())
        statuses, server_errors = asyncio.run(_load(server, keys))
        listings = [*_settled(server, keys["full"]), *_settled(server, keys["other"])]
    finally:
        server.stop()
    log = server.read_log()

    assert not server_errors, server_errors[:5]
    assert "request_crashed" not in log
    total = sum(statuses.values())
    assert total > CLIENTS * 5, statuses  # the load really ran
    kinds = {what for _, what, _ in statuses}
    assert {"list", "vps", "snapshots", "create", "delete"} <= kinds, statuses
    assert any(s == 202 for (_, what, s) in statuses if what == "create"), statuses

    for listing in listings:
        vps = listing["vps"]
        limits = listing["limits"]
        data = listing["data"]
        assert isinstance(vps, dict) and isinstance(limits, dict) and isinstance(data, list)
        # Slots are never exceeded.
        assert limits["usedSnapshots"] <= limits["totalSnapshots"], listing
        # Database and disk agree.
        on_disk = disk_snapshots(tmp_path / "disks" / f"{vps['name']}.qcow2")
        in_db = {s["name"] for s in data if s["status"] == "available"}
        assert in_db == on_disk, (vps["name"], in_db, on_disk)
