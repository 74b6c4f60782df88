"""A real ``vpsnap serve`` killed (SIGKILL) after a job's end committed and before its webhook
events went out: after a restart the events are delivered, once each, signed."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from tests.live_server import ServerProcess
from tests.webhook_receiver import running_receiver

pytestmark = [pytest.mark.qemu, pytest.mark.slow]


def env(delivery_interval: float) -> dict[str, str]:
    return {
        "VPSNAP_LOG_LEVEL": "warning",
        "VPSNAP_DEMO_VM": "false",
        "VPSNAP_WEBHOOK_ALLOWED_NETWORKS": "127.0.0.1/32",
        "VPSNAP_WEBHOOK_DELIVERY_INTERVAL_SECONDS": str(delivery_interval),
    }


async def wait_for(condition: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.1)


async def test_events_committed_before_a_crash_are_delivered_after_the_restart(
    tmp_path: Path,
) -> None:
    async with running_receiver() as receiver:
        # The outbox is only looked at every hour: the events wait in it when the kill lands.
        first = await asyncio.to_thread(ServerProcess, tmp_path, "--demo", env=env(3600))
        try:
            key = json.loads((tmp_path / "demo-tokens.json").read_text())["full"]
            auth = {"Authorization": f"Bearer {key}"}
            async with httpx.AsyncClient(base_url=first.url, headers=auth, timeout=30) as api:
                hook = (await api.post("/api/v2/webhooks", json={"url": receiver.url})).json()
                vps = (await api.get("/api/v2/vps", params={"name": "demo-web"})).json()
                vps_id = vps["data"][0]["id"]
                created = await api.post(
                    f"/api/v2/vps/{vps_id}/snapshots", json={"name": "before-crash"}
                )
                job_id = created.json()["operation"]["jobId"]
                # A long-poll answers at each change of status: ask until the job has ended.
                for _ in range(10):
                    job = (
                        await api.get(f"/api/jobs/{job_id}", headers={"Prefer": "wait=30"})
                    ).json()
                    if job["status"] in ("completed", "failed"):
                        break
                assert job["status"] == "completed", job
                await asyncio.sleep(0.5)
                assert receiver.received == []  # committed, not delivered
        finally:
            await asyncio.to_thread(first.kill)

        second = await asyncio.to_thread(ServerProcess, tmp_path, env=env(0.2))
        try:
            await wait_for(lambda: len(receiver.delivered()) >= 2)
            await asyncio.sleep(1.0)  # and nothing more arrives
        finally:
            await asyncio.to_thread(second.stop)

    types = sorted(receiver.types())
    assert types == ["job.completed", "snapshot.created"]
    assert len({r.message_id for r in receiver.received}) == 2
    for request in receiver.received:
        payload = request.verified(hook["secret"])
        assert payload["data"]["vps"]["id"] == vps_id
