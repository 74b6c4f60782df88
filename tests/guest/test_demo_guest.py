"""``VPSNAP_DEMO_GUEST=true ./scripts/demo``: a real ``vpsnap serve --demo`` whose demo-web is the
real guest with its agent channel wired, so a quiesced snapshot is ``filesystem``-consistent.

(scripts/demo itself only adds ``scripts/install`` and ``scripts/guest-image`` in front, which
set the two variables passed here.)
"""

from __future__ import annotations

import asyncio
import json
import shutil
import tempfile
from pathlib import Path

import httpx
import pytest

from tests.guest.agent import GuestAgentClient
from tests.guest.conftest import BOOT_LIMIT_SECONDS, GuestSession
from tests.live_server import ServerProcess
from vpsnap.drivers.machines import ManagedMachines

pytestmark = [pytest.mark.guest, pytest.mark.qemu, pytest.mark.slow]


async def test_the_guest_demo_takes_filesystem_consistent_snapshots_of_demo_web(
    guest_session: GuestSession,
) -> None:
    assert guest_session.image is not None
    data_dir = Path(tempfile.mkdtemp(prefix="demo", dir=guest_session.workdir))
    env = {
        "VPSNAP_DEMO_GUEST": "true",
        "VPSNAP_DEMO_GUEST_IMAGE": str(guest_session.image.disk),
        "VPSNAP_LOG_LEVEL": "info",
    }
    server = await asyncio.to_thread(ServerProcess, data_dir, "--demo", env=env)
    machines = ManagedMachines(data_dir)
    try:
        tokens = json.loads((data_dir / "demo-tokens.json").read_text())
        headers = {"Authorization": f"Bearer {tokens['full']}"}
        async with httpx.AsyncClient(base_url=server.url, headers=headers, timeout=60) as client:
            listing = (await client.get("/api/v2/vps", params={"name": "demo-web"})).json()
            [vps] = listing["data"]
            assert vps["powerState"] == "running"
            agent = GuestAgentClient(str(machines.dir_for(vps["id"]).guest_agent_socket))
            await agent.wait_ready(BOOT_LIMIT_SECONDS["kvm" if guest_session.kvm else "tcg"])
            # The console the demo documents shows the guest's ready marker too.
            console = data_dir / "demo-web-console.log"
            for _ in range(300):
                if "VPSNAP-GUEST-READY" in console.read_text(errors="replace"):
                    break
                await asyncio.sleep(0.2)
            else:
                raise AssertionError("no ready marker on demo-web's console")

            created = await client.post(
                f"/api/v2/vps/{vps['id']}/snapshots", json={"name": "demo-quiesced"}
            )
            assert created.status_code == 202, created.text
            job_id = created.json()["operation"]["jobId"]
            for _ in range(60):
                job = (
                    await client.get(f"/api/jobs/{job_id}", headers={"Prefer": "wait=10"})
                ).json()
                if job["status"] in ("completed", "failed"):
                    break
            assert job["status"] == "completed", job
            assert job["result"]["guestThawed"] is True
            snapshots = (await client.get(f"/api/v2/vps/{vps['id']}/snapshots")).json()["data"]
            [snapshot] = snapshots
            assert snapshot["consistency"] == "filesystem"
            assert snapshot["consistencyReason"] is None
    finally:
        await asyncio.to_thread(server.stop)
        for vps_id, _ in list(machines.running()):
            await machines.kill(vps_id)
        shutil.rmtree(data_dir, ignore_errors=True)
