"""`vpsnap vps|snapshots|jobs …` against a real server: output for people and for scripts, and
the exit codes scripts branch on."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from click.testing import CliRunner, Result

from tests.live_server import LiveServer, free_port
from vpsnap.cli.entry import cli as app

pytestmark = [pytest.mark.slow, pytest.mark.qemu]

JOB_ID = re.compile(r"job_[0-9a-z]{26}")


def vpsnap(server: LiveServer, *args: str, key: str = "full", answer: str | None = None) -> Result:
    """Runs the command in-process; COLUMNS keeps tables from wrapping ids."""
    options = ["--url", server.url, "--api-key", server.key(key)]
    return CliRunner().invoke(app, [*args, *options], input=answer, env={"COLUMNS": "200"})


def as_json(result: Result) -> Any:
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)


def error_line(result: Result) -> str:
    return result.stderr.strip().splitlines()[-2 if "request id:" in result.stderr else -1]


def test_vps_list_as_a_table_and_as_json(api_server: LiveServer) -> None:
    table = vpsnap(api_server, "vps", "list")
    assert table.exit_code == 0, table.stderr
    data = as_json(vpsnap(api_server, "vps", "list", "--output", "json"))["data"]
    assert {v["name"] for v in data} >= {"demo-web", "demo-db", "demo-nosnap"}
    assert "other-web" not in table.stdout  # another account's
    for vps in data:
        assert vps["id"] in table.stdout
        assert vps["name"] in table.stdout


def test_create_list_and_delete_a_snapshot(api_server: LiveServer) -> None:
    vps = api_server.add_vps(2)
    created = vpsnap(api_server, "snapshots", "create", vps, "before-upgrade", "-d", "pkg upgrade")
    assert created.exit_code == 0, created.stderr
    assert f"snapshot 'before-upgrade' of {vps}: available, expires in 23 h" in created.stdout
    assert "creating snapshot 'before-upgrade'" in created.stderr  # progress, on stderr
    assert "completed" in created.stderr

    table = vpsnap(api_server, "snapshots", "list", vps)
    assert table.exit_code == 0, table.stderr
    assert f"{vps}: 1 of 2 snapshot slots used" in table.stdout
    assert re.search(r"before-upgrade\s+available\s+\d+ s ago\s+in 23 h\s+crash", table.stdout)
    assert "create: yes" in table.stdout

    listing = as_json(vpsnap(api_server, "snapshots", "list", vps, "-o", "json"))
    assert listing["limits"] == {"totalSnapshots": 2, "usedSnapshots": 1, "remainingSnapshots": 1}
    assert [(s["name"], s["description"]) for s in listing["data"]] == [
        ("before-upgrade", "pkg upgrade")
    ]

    declined = vpsnap(api_server, "snapshots", "delete", vps, "before-upgrade", answer="n\n")
    assert declined.exit_code == 1
    assert "Delete snapshot 'before-upgrade'" in declined.stderr
    assert "delete cancelled: nothing was changed" in declined.stderr
    deleted = vpsnap(api_server, "snapshots", "delete", vps, "before-upgrade", "--yes")
    assert deleted.exit_code == 0, deleted.stderr
    assert f"deleted snapshot 'before-upgrade' of {vps}" in deleted.stdout
    again = vpsnap(api_server, "snapshots", "delete", vps, "before-upgrade", "--yes")
    assert again.exit_code == 3
    assert "[snapshot_not_found]" in error_line(again)


def test_create_as_json_reports_how_room_was_made(api_server: LiveServer) -> None:
    vps = api_server.add_vps(1)
    as_json(vpsnap(api_server, "snapshots", "create", vps, "old", "-o", "json"))
    full = vpsnap(api_server, "snapshots", "create", vps, "new", "-o", "json")
    assert full.exit_code == 4
    assert "all 1 snapshot slot(s)" in error_line(full)
    assert "[cannot_make_room]" in error_line(full)
    assert json.loads(full.stdout)["error"]["code"] == "cannot_make_room"

    create = ("snapshots", "create", vps)
    # Making room deletes a snapshot or spends money: asked first; no is a no (exit 1).
    for how in ("delete-oldest", "buy-slot"):
        declined = vpsnap(api_server, *create, "new", "--make-room", how, answer="n\n")
        assert declined.exit_code == 1, declined.stderr
        assert "create cancelled: nothing was changed" in declined.stderr
    kept = as_json(vpsnap(api_server, "snapshots", "list", vps, "-o", "json"))
    assert ([s["name"] for s in kept["data"]], kept["limits"]["totalSnapshots"]) == (["old"], 1)

    made = as_json(
        vpsnap(api_server, *create, "new", "--make-room", "delete-oldest", "--yes", "-o", "json")
    )
    assert made["snapshot"]["name"] == "new"
    assert made["snapshot"]["status"] == "available"
    assert JOB_ID.fullmatch(made["jobId"])
    actions = [s["action"] for s in made["steps"]]
    assert actions[0] == "delete-oldest"
    assert "create" in actions

    bought = as_json(
        vpsnap(api_server, *create, "third", "--make-room", "buy-slot", "-o", "json", answer="y\n")
    )
    assert "1 → 2" in next(s["message"] for s in bought["steps"] if s["action"] == "buy-slot")
    listing = as_json(vpsnap(api_server, "snapshots", "list", vps, "-o", "json"))
    names = [s["name"] for s in listing["data"]]
    assert names == ["new", "third"]


def test_a_taken_name_and_a_bad_name(api_server: LiveServer) -> None:
    vps = api_server.add_vps(2)
    assert vpsnap(api_server, "snapshots", "create", vps, "same").exit_code == 0
    taken = vpsnap(api_server, "snapshots", "create", vps, "SAME")
    assert taken.exit_code == 4
    assert "[snapshot_name_taken]" in error_line(taken)
    invalid = vpsnap(api_server, "snapshots", "create", vps, "no spaces!")
    assert invalid.exit_code == 2
    assert "/name" in error_line(invalid)
    assert "[invalid_request]" in error_line(invalid)


def test_no_wait_then_jobs_wait(api_server: LiveServer) -> None:
    vps = api_server.add_vps(1)
    queued = vpsnap(api_server, "snapshots", "create", vps, "slow-cli", "--no-wait")
    assert queued.exit_code == 0, queued.stderr
    assert "creating" in queued.stdout
    match = JOB_ID.search(queued.stdout.split("vpsnap jobs wait")[1])
    assert match is not None
    waited = vpsnap(api_server, "jobs", "wait", match.group())
    assert waited.exit_code == 0, waited.stderr
    assert f"{match.group()} snapshot.create (snapshot 'slow-cli'): completed" in waited.stdout
    job = as_json(vpsnap(api_server, "jobs", "wait", match.group(), "-o", "json"))
    assert (job["status"], job["type"]) == ("completed", "snapshot.create")


def test_restore_asks_first(api_server: LiveServer) -> None:
    vps = api_server.add_vps(3)
    for name in ("a", "b"):
        assert vpsnap(api_server, "snapshots", "create", vps, name).exit_code == 0

    declined = vpsnap(api_server, "snapshots", "restore", vps, "a", answer="n\n")
    assert declined.exit_code == 1
    assert f"Roll {vps} back to snapshot 'a'" in declined.stderr
    assert "restore cancelled: nothing was changed" in declined.stderr
    no_answer = vpsnap(api_server, "snapshots", "restore", vps, "a")  # stdin closed: not a yes
    assert no_answer.exit_code == 1

    restored = vpsnap(api_server, "snapshots", "restore", vps, "a", answer="y\n")
    assert restored.exit_code == 0, restored.stderr
    assert f"restored {vps} to snapshot 'a' (power: stopped → stopped)" in restored.stdout
    # The restored snapshot is now the current one: the parent of the next.
    as_json(vpsnap(api_server, "snapshots", "create", vps, "c", "-o", "json"))
    listing = as_json(vpsnap(api_server, "snapshots", "list", vps, "-o", "json"))
    assert {s["name"]: s["parentName"] for s in listing["data"]} == {"a": None, "b": "a", "c": "a"}

    job = as_json(vpsnap(api_server, "snapshots", "restore", vps, "b", "--yes", "-o", "json"))
    assert (job["type"], job["status"]) == ("snapshot.restore", "completed")
    assert job["result"]["powerStateAfter"] == "stopped"


def test_a_failed_job_exits_7_and_a_timeout_8(api_server: LiveServer) -> None:
    vps = api_server.add_vps(2)
    api_server.foreign_snapshot(vps, "foreign")
    failed = vpsnap(api_server, "snapshots", "create", vps, "foreign", "-o", "json")
    assert failed.exit_code == 7
    assert "failed" in error_line(failed)
    assert json.loads(failed.stdout)["error"]["code"] == "snapshot_name_taken"

    slow = vpsnap(api_server, "snapshots", "create", vps, "slow-late", "--timeout", "0.5")
    assert slow.exit_code == 8
    assert "[job_timeout]" in error_line(slow)
    job_id = JOB_ID.search(error_line(slow))
    assert job_id is not None
    assert vpsnap(api_server, "jobs", "wait", job_id.group()).exit_code == 0


def test_not_found_exits_3(api_server: LiveServer) -> None:
    unknown = vpsnap(api_server, "snapshots", "list", "no-such-vps")
    assert unknown.exit_code == 3
    assert "no VPS with name 'no-such-vps'" in error_line(unknown)
    job = vpsnap(api_server, "jobs", "wait", "job_" + "0" * 26)
    assert job.exit_code == 3
    assert "request id: req_" in job.stderr


def test_credential_problems_exit_5(api_server: LiveServer) -> None:
    readonly = vpsnap(api_server, "snapshots", "create", "demo-web", "x", key="readonly")
    assert readonly.exit_code == 5
    assert "backup:vm" in error_line(readonly)
    stranger = CliRunner().invoke(
        app, ["vps", "list", "--url", api_server.url, "--api-key", "vpsnap_not-a-key"]
    )
    assert stranger.exit_code == 5
    assert "[unauthorized]" in stranger.stderr
    assert "request id: req_" in stranger.stderr


def test_usage_problems_exit_2_and_an_absent_server_9(api_server: LiveServer) -> None:
    no_key = CliRunner().invoke(
        app, ["vps", "list", "--url", api_server.url], env={"VPSNAP_API_KEY": None}
    )
    assert no_key.exit_code == 2
    assert "no API key" in no_key.stderr
    missing_argument = CliRunner().invoke(app, ["snapshots", "create", "demo-web"])
    assert missing_argument.exit_code == 2
    absent = CliRunner().invoke(
        app, ["vps", "list", "--url", f"http://127.0.0.1:{free_port()}", "--api-key", "k"]
    )
    assert absent.exit_code == 9
    assert "is vpsnap running at" in absent.stderr
