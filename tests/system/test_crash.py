"""A server killed with SIGKILL mid-job: after a restart the job finishes exactly once.

These tests run the real `vpsnap serve` as a process group, with a `qemu-img` wrapper that
stalls around the real snapshot command so the kill lands at a chosen moment.
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from tests.live_server import VPSNAP, ServerProcess, free_port

pytestmark = [pytest.mark.qemu, pytest.mark.slow]


# Stalls `qemu-img snapshot ... -c ...` before (STALL_BEFORE) or after (STALL_AFTER) running
# the real command, leaving a marker file so the test knows where the job is.
WRAPPER = """#!/bin/sh
case " $* " in
  *" -c "*)
    touch "{marker}.started"
    [ "$STALL" = before ] && sleep 60
    /usr/bin/env qemu-img "$@"; rc=$?
    touch "{marker}.done"
    [ "$STALL" = after ] && sleep 60
    exit $rc ;;
esac
exec /usr/bin/env qemu-img "$@"
"""


def start_server(data_dir: Path, env: dict[str, str]) -> ServerProcess:
    return ServerProcess(data_dir, env=env, ready_path="/healthz")


def snapshot_names(disk: str) -> list[str]:
    out = subprocess.run(
        ["qemu-img", "info", "-U", "--output=json", disk], capture_output=True, check=True
    )
    return [s["name"] for s in json.loads(out.stdout).get("snapshots", [])]


@pytest.mark.parametrize("stall", ["before", "after"])
def test_a_killed_server_finishes_the_job_exactly_once_after_restart(
    one_vps: tuple[Path, str, Path], stall: str
) -> None:
    data_dir, key, disk_path = one_vps
    disk = str(disk_path)
    marker = data_dir / "qemu-img-snapshot"
    wrapper = data_dir / "qemu-img-wrapper"
    wrapper.write_text(WRAPPER.format(marker=marker))
    wrapper.chmod(0o755)
    headers = {"Authorization": f"Bearer {key}"}

    server = start_server(data_dir, {"VPSNAP_QEMU_IMG": str(wrapper), "STALL": stall})
    try:
        vps_id = httpx.get(f"{server.url}/api/v2/vps", headers=headers).json()["data"][0]["id"]
        created = httpx.post(
            f"{server.url}/api/v2/vps/{vps_id}/snapshots",
            json={"name": "before-upgrade"},
            headers=headers,
        )
        assert created.status_code == 202
        job_id = created.json()["operation"]["jobId"]
        waiting_for = Path(f"{marker}.{'started' if stall == 'before' else 'done'}")
        deadline = time.monotonic() + 30
        while not waiting_for.exists():
            assert time.monotonic() < deadline, server.read_log()
            time.sleep(0.05)
        job = httpx.get(f"{server.url}/api/jobs/{job_id}", headers=headers).json()
        assert job["status"] == "in_progress"
    finally:
        server.kill()
    first_log = server.read_log()
    assert snapshot_names(disk) == ([] if stall == "before" else ["before-upgrade"])

    # The restart runs the real qemu-img: the orphaned job is taken up again at once.
    restarted = start_server(data_dir, {})
    try:
        job = httpx.get(
            f"{restarted.url}/api/jobs/{job_id}",
            headers={**headers, "Prefer": "wait=30"},
            timeout=40,
        ).json()
        while job["status"] not in ("completed", "failed"):
            job = httpx.get(
                f"{restarted.url}/api/jobs/{job_id}",
                headers={**headers, "Prefer": "wait=30"},
                timeout=40,
            ).json()
        assert job["status"] == "completed", job
        listing = httpx.get(
            f"{restarted.url}/api/v2/vps/{vps_id}/snapshots", headers=headers
        ).json()
        assert [(s["name"], s["status"]) for s in listing["data"]] == [
            ("before-upgrade", "available")
        ]
    finally:
        restarted.stop()
    assert snapshot_names(disk) == ["before-upgrade"]
    logs = first_log + restarted.read_log()
    assert logs.count('"event": "job_succeeded"') == 1
    assert '"event": "job_requeued"' in restarted.read_log()


def test_a_second_server_on_the_same_data_dir_is_refused(
    one_vps: tuple[Path, str, Path],
) -> None:
    data_dir, _, _ = one_vps
    server = start_server(data_dir, {})
    try:
        second = subprocess.run(
            [VPSNAP, "serve", "--port", str(free_port()), "--data-dir", str(data_dir)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert second.returncode != 0
        assert "already using" in second.stderr
    finally:
        server.stop()
