"""No key material in the server's output (issue 9, kind 12): a whole demo session through the
API with real keys (debug logging), then the server's complete output is searched for every
key's secret and its stored hash."""

from __future__ import annotations

import hashlib
import json
import secrets
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from tests.live_server import VPSNAP, ServerProcess

pytestmark = [pytest.mark.qemu, pytest.mark.slow]


def wait(client: httpx.Client, response: httpx.Response) -> dict[str, object]:
    assert response.status_code == 202, response.text
    location = response.headers["location"]
    for _ in range(60):
        job: dict[str, object] = client.get(location, headers={"Prefer": "wait=5"}).json()
        if job["status"] in ("completed", "failed"):
            return job
    raise AssertionError(f"{location} did not finish")


def admin(data_dir: Path, *args: str) -> tuple[str, str]:
    result = subprocess.run(
        [VPSNAP, "admin", *args, "--data-dir", str(data_dir)],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    return result.stdout.strip(), result.stderr


def session(server: ServerProcess, keys: dict[str, str], data_dir: Path) -> dict[str, str]:
    """Everything a tenant and an operator do in a demo; returns the secrets used."""
    bogus = "vpsnap_" + secrets.token_urlsafe(32)
    added, said = admin(
        data_dir, "key", "create", "--account", "demo", "--scopes", "read:vm,backup:vm"
    )
    added_id = said.split("key id ")[1].split(",")[0]
    with httpx.Client(
        base_url=server.url, headers={"Authorization": f"Bearer {keys['full']}"}, timeout=60
    ) as full:
        vps = full.get("/api/v2/vps", params={"name": "demo-web"}).json()["data"][0]["id"]
        snapshots = f"/api/v2/vps/{vps}/snapshots"
        created = full.post(snapshots, json={"name": "before"}, headers={"Idempotency-Key": "k1"})
        assert wait(full, created)["status"] == "completed"
        replay = full.post(snapshots, json={"name": "before"}, headers={"Idempotency-Key": "k1"})
        assert replay.headers.get("idempotent-replayed") == "true"
        assert wait(full, full.post(f"{snapshots}/before/actions/restore"))["status"] == "completed"
        assert full.post(snapshots, json={"name": "before"}).status_code == 409
        assert wait(full, full.delete(f"{snapshots}/before"))["status"] == "completed"
        schedule = f"/api/v2/vps/{vps}/snapshot-schedules"
        assert full.post(schedule, json={"enabled": True, "intervalHours": 6}).status_code == 200
        assert full.delete(schedule).status_code == 204
        upgrade = f"/api/v2/vps/{vps}/actions/config"
        assert (
            full.post(upgrade, json={"resources": {"snapshotSlots": 3}, "dryRun": True}).status_code
            == 200
        )
        # The other keys, the other header, and keys that do not work.
        for headers, status in (
            ({"Authorization": f"Bearer {keys['readonly']}"}, 200),
            ({"X-API-Key": keys["other"]}, 200),
            ({"Authorization": f"Bearer {added}"}, 200),
            ({"Authorization": f"Bearer {bogus}"}, 401),
            ({"X-API-Key": bogus}, 401),
        ):
            answer = httpx.get(f"{server.url}/api/v2/vps", headers=headers, timeout=60)
            assert answer.status_code == status, headers
        assert (
            full.post(
                snapshots,
                json={"name": "x"},
                headers={"Authorization": f"Bearer {keys['readonly']}"},
            ).status_code
            == 403
        )
        assert (
            full.get(snapshots, headers={"Authorization": f"Bearer {keys['other']}"}).status_code
            == 404
        )
        admin(data_dir, "key", "revoke", added_id)
        time.sleep(5.5)  # VPSNAP_AUTH_CACHE_SECONDS: a revocation by another process
        revoked = httpx.get(
            f"{server.url}/api/v2/vps", headers={"Authorization": f"Bearer {added}"}, timeout=60
        )
        assert revoked.status_code == 401
    return {**keys, "admin-created": added, "made-up": bogus}


def test_a_demo_session_leaves_no_key_in_the_log(tmp_path: Path) -> None:
    server = ServerProcess(
        tmp_path,
        "--demo",
        env={"VPSNAP_LOG_LEVEL": "debug", "VPSNAP_DEMO_VM": "false"},
    )
    try:
        tokens = json.loads((tmp_path / "demo-tokens.json").read_text())
        passwords: dict[str, str] = tokens.pop("users")
        keys = {label: secret for label, secret in tokens.items() if isinstance(secret, str)}
        used = session(server, keys, tmp_path)
        # A panel sign-in (a password over the wire) and a session cookie's use.
        login = httpx.post(
            f"{server.url}/login",
            data={"email": "demo@example.com", "password": passwords["demo@example.com"]},
            headers={"Origin": server.url},
            timeout=60,
        )
        assert login.status_code == 303, login.status_code
        cookie = login.cookies.get("hostup_session")
        assert cookie
        panel = httpx.get(f"{server.url}/vps", cookies={"hostup_session": cookie}, timeout=60)
        assert panel.status_code == 200
        time.sleep(0.5)  # the last log lines
    finally:
        server.stop()
    log = server.read_log()
    assert "request_completed" in log  # debug logging really ran
    assert len(log.splitlines()) > 20
    lines = log.splitlines()
    # The dashboard's passwords and the session cookie never reach the log either.
    for email, password in passwords.items():
        assert not [n for n, line in enumerate(lines, 1) if password in line], email
    assert not [n for n, line in enumerate(lines, 1) if cookie in line], "session cookie"
    for label, secret in used.items():
        digest = hashlib.sha256(secret.encode()).hexdigest()
        for what, material in (("secret", secret), ("hash", digest), ("hash prefix", digest[:32])):
            hits = [number for number, line in enumerate(lines, 1) if material in line]
            # Line numbers only: the assertion must not print the key either.
            assert not hits, f"the {label} key's {what} is on log lines {hits[:10]}"
