"""Issue 9, kind 11: crash recovery of multi-step operations resumes from their recorded steps.

Invariant (docs/how-snapshots-work.md, "Crash recovery"): a job records the steps it has taken
(intent before, outcome after each hypervisor step); a re-run after a crash reads them and
finishes the rest, ending in the power state the user had; start-up work on a VM (the demo's
VM start) is serialised with its queued jobs; SIGTERM stops claiming, lets running jobs finish
within a grace period, then hands them back. Every test runs the real `vpsnap serve`, real
qemu-img and (for the VM) a real qemu-system-x86_64.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.live_server import ServerProcess
from vpsnap.drivers.machines import ManagedMachines

pytestmark = [pytest.mark.qemu, pytest.mark.slow]

# Stalls `qemu-img snapshot ... <FLAG> ...` after leaving a marker, until the file $GO exists
# or $STALL_SECONDS pass, then execs the real qemu-img (exec: the stalled process *is*
# qemu-img, as a slow real one would be).
WRAPPER = """#!/bin/sh
case " $* " in
  *" {flag} "*)
    touch "{marker}"
    waited=0
    while [ ! -e "${{GO:-/nonexistent}}" ] && [ "$waited" -lt "${{STALL_SECONDS:-60}}0" ]; do
      sleep 0.1; waited=$((waited + 1))
    done
    ;;
esac
exec /usr/bin/env qemu-img "$@"
"""


def _wrapper(data_dir: Path, flag: str) -> tuple[Path, Path]:
    marker = data_dir / f"stalled{flag}"
    wrapper = data_dir / f"qemu-img-stall{flag}"
    wrapper.write_text(WRAPPER.format(flag=flag, marker=marker))
    wrapper.chmod(0o755)
    return wrapper, marker


def _wait_for(path: Path, server: ServerProcess, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while not path.exists():
        assert time.monotonic() < deadline, server.read_log()
        time.sleep(0.05)


def _job(server: ServerProcess, key: str, job_id: str) -> dict[str, object]:
    headers = {"Authorization": f"Bearer {key}", "Prefer": "wait=30"}
    deadline = time.monotonic() + 90
    while True:
        job: dict[str, object] = httpx.get(
            f"{server.url}/api/jobs/{job_id}", headers=headers, timeout=40
        ).json()
        if job["status"] in ("completed", "failed") or time.monotonic() > deadline:
            return job


def _post(server: ServerProcess, key: str, path: str, body: object = None) -> str:
    response = httpx.post(
        f"{server.url}{path}", json=body, headers={"Authorization": f"Bearer {key}"}, timeout=30
    )
    assert response.status_code == 202, response.text
    return str(response.json()["operation"]["jobId"])


def _snapshot_names(disk: Path) -> list[str]:
    out = subprocess.run(
        ["qemu-img", "info", "-U", "--output=json", str(disk)],
        capture_output=True,
        check=True,
        timeout=30,
    )
    return [s["name"] for s in json.loads(out.stdout).get("snapshots", [])]


@pytest.fixture
def demo_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A data dir for `serve --demo`; every VM it started is gone afterwards."""
    data_dir = tmp_path_factory.mktemp("crash")
    yield data_dir
    machines = ManagedMachines(data_dir)
    for vps_id, _ in list(machines.running()):
        subprocess.run(["kill", "-9", str(machines.pid(vps_id))], check=False)


DEMO_ENV = {
    "VPSNAP_RATE_LIMIT_PER_KEY": "100000/minute",
    "VPSNAP_RATE_LIMIT_SNAPSHOT_MUTATIONS_PER_VPS": "100000/minute",
}


def _vps_id(server: ServerProcess, key: str, name: str) -> str:
    body = httpx.get(
        f"{server.url}/api/v2/vps?name={name}", headers={"Authorization": f"Bearer {key}"}
    ).json()
    return str(body["data"][0]["id"])


def _power_state(server: ServerProcess, key: str, vps_id: str) -> str:
    body = httpx.get(
        f"{server.url}/api/v2/vps/{vps_id}", headers={"Authorization": f"Bearer {key}"}
    ).json()
    return str(body["powerState"])


@pytest.mark.parametrize("restart_with_demo", [False, True])
def test_a_restore_of_a_running_vm_killed_after_qemu_exited_ends_running(
    demo_dir: Path, restart_with_demo: bool
) -> None:
    """SIGKILL of the server while a disk-only restore of the running demo-web is in
    progress, after QEMU has exited: after restart the VM runs again and the job reports
    running → running. Restarted with --demo, the demo's own VM start waits behind the
    re-queued restore instead of racing it (an untracked QEMU holding the disk before)."""
    wrapper, marker = _wrapper(demo_dir, "-a")
    first = ServerProcess(demo_dir, "--demo", env={**DEMO_ENV, "VPSNAP_QEMU_IMG": str(wrapper)})
    try:
        key = json.loads((demo_dir / "demo-tokens.json").read_text())["full"]
        vps_id = _vps_id(first, key, "demo-web")
        assert _power_state(first, key, vps_id) == "running"
        created = _job(
            first, key, _post(first, key, f"/api/v2/vps/{vps_id}/snapshots", {"name": "s"})
        )
        assert created["status"] == "completed", created
        restore = _post(first, key, f"/api/v2/vps/{vps_id}/snapshots/s/actions/restore")
        _wait_for(marker, first)  # QEMU has exited; qemu-img -a is about to run
        assert list(ManagedMachines(demo_dir).running()) == []
    finally:
        first.kill()

    args = ("--demo",) if restart_with_demo else ()
    second = ServerProcess(demo_dir, *args, env=DEMO_ENV)
    try:
        done = _job(second, key, restore)
        assert done["status"] == "completed", (done, second.read_log())
        assert done["result"] == {
            "name": "s",
            "powerStateBefore": "running",
            "powerStateAfter": "running",
        }
        assert _power_state(second, key, vps_id) == "running"
        # Exactly one QEMU, and vpsnap tracks it (its pid file names it).
        [(running_id, pid)] = list(ManagedMachines(demo_dir).running())
        assert running_id == vps_id
        found = subprocess.run(
            ["pgrep", "-f", f"vpsnap-{vps_id}"], check=False, capture_output=True, text=True
        )
        assert found.stdout.split() == [str(pid)]
        # Later operations work: a live snapshot of the running VM.
        later = _job(
            second, key, _post(second, key, f"/api/v2/vps/{vps_id}/snapshots", {"name": "t"})
        )
        assert later["status"] == "completed", later
        stop = _job(second, key, _post(second, key, f"/api/v2/vps/{vps_id}/actions/stop"))
        assert stop["status"] == "completed", stop
    finally:
        second.stop()


def test_a_slow_qemu_img_never_outlives_a_killed_server(one_vps: tuple[Path, str, Path]) -> None:
    """`kill -9` of the server (its pid only) while qemu-img creates a snapshot: qemu-img must
    not go on and write a second, untracked snapshot after the restarted server re-ran the
    job (it dies with the server). Afterwards: the job completed once, one snapshot on disk,
    and its row available."""
    data_dir, key, disk = one_vps
    wrapper, marker = _wrapper(data_dir, "-c")
    go = data_dir / "go"
    env = {"VPSNAP_QEMU_IMG": str(wrapper), "GO": str(go)}
    first = ServerProcess(data_dir, env=env)
    vps_id = _vps_id(first, key, "web")
    job_id = _post(first, key, f"/api/v2/vps/{vps_id}/snapshots", {"name": "before-upgrade"})
    _wait_for(marker, first)
    first.kill_server_only()

    second = ServerProcess(data_dir, env={})
    try:
        done = _job(second, key, job_id)
        assert done["status"] == "completed", done
        # Let a qemu-img that outlived the first server go on, as a slow one would.
        go.touch()
        time.sleep(2)
        assert _snapshot_names(disk) == ["before-upgrade"]
        listing = httpx.get(
            f"{second.url}/api/v2/vps/{vps_id}/snapshots",
            headers={"Authorization": f"Bearer {key}"},
        ).json()
        assert [(s["name"], s["status"]) for s in listing["data"]] == [
            ("before-upgrade", "available")
        ]
    finally:
        second.stop()


def test_sigterm_lets_a_job_run_for_the_grace_then_hands_it_back(
    one_vps: tuple[Path, str, Path],
) -> None:
    """SIGTERM while a 60 s job runs: the process exits after the grace period (not at once,
    leaving the job in_progress until the next start); the job is back in the queue and the
    next server finishes it exactly once."""
    data_dir, key, disk = one_vps
    wrapper, marker = _wrapper(data_dir, "-c")
    env = {"VPSNAP_QEMU_IMG": str(wrapper), "VPSNAP_SHUTDOWN_GRACE_SECONDS": "2"}
    first = ServerProcess(data_dir, env=env)
    vps_id = _vps_id(first, key, "web")
    job_id = _post(first, key, f"/api/v2/vps/{vps_id}/snapshots", {"name": "slow"})
    _wait_for(marker, first)
    started = time.monotonic()
    assert first.terminate() == 0, first.read_log()
    elapsed = time.monotonic() - started
    assert 1.5 < elapsed < 15, elapsed
    log = first.read_log()
    assert '"event": "job_handed_back"' in log

    with sqlite3.connect(data_dir / "vpsnap.db") as db:
        status, owner, attempts = db.execute(
            "SELECT status, lease_owner, attempts FROM jobs WHERE id = ?", (job_id,)
        ).fetchone()
    assert (status, owner, attempts) == ("queued", None, 0)
    assert _snapshot_names(disk) == []

    second = ServerProcess(data_dir, env={})
    try:
        done = _job(second, key, job_id)
        assert done["status"] == "completed", done
        assert _snapshot_names(disk) == ["slow"]
    finally:
        second.stop()
    assert (log + second.read_log()).count('"event": "job_succeeded"') == 1
