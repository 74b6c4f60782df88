"""`vpsnap serve` on a busy port starts nothing and says what to do; logs are JSON when piped
and console lines when asked; `vpsnap admin demo reset` puts the demo back, with a server
running (it runs the deletions) or without one (the command runs them)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner

from tests.live_server import VPSNAP, LiveServer, ServerProcess
from vpsnap.cli.entry import cli

pytestmark = [pytest.mark.slow, pytest.mark.qemu]


def test_a_busy_port_starts_nothing_and_says_how_to_choose_another(tmp_path: Path) -> None:
    with socket.create_server(("127.0.0.1", 0)) as busy:
        port = busy.getsockname()[1]
        done = subprocess.run(
            [VPSNAP, "serve", "--demo", "--port", str(port), "--data-dir", str(tmp_path / "var")],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
            env={**os.environ, "VPSNAP_DEMO_VM": "true"},
        )
    assert done.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port}" in done.stderr
    assert "scripts/demo --port 9000" in done.stderr
    assert "Nothing was started" in done.stderr
    assert "Try it" not in done.stderr + done.stdout  # no banner for the other server
    assert not (tmp_path / "var").exists()  # no database, no disks, no VM sockets


def test_logs_are_json_when_piped_and_console_lines_when_asked(tmp_path: Path) -> None:
    env = {"VPSNAP_DEMO_VM": "false"}
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    piped = ServerProcess(tmp_path / "a", env=env)
    piped.stop()
    lines = [line for line in piped.read_log().splitlines() if line.startswith("{")]
    assert any(json.loads(line)["event"] == "worker_started" for line in lines)
    console = ServerProcess(tmp_path / "b", "--log-format", "console", env=env)
    console.stop()
    text = console.read_log()
    assert "worker_started" in text
    assert not any(line.startswith('{"') for line in text.splitlines())


def cli_run(server: LiveServer, *args: str) -> dict[str, object]:
    options = ["--url", server.url, "--api-key", server.key(), "-o", "json"]
    if args[:2] == ("snapshots", "create"):
        options.append("--yes")
    result = CliRunner().invoke(cli, [*args, *options])
    assert result.exit_code == 0, result.stderr
    answer = json.loads(result.stdout)
    assert isinstance(answer, dict)
    return answer


def disk_snapshots(disk: Path) -> str:
    return subprocess.run(
        ["qemu-img", "snapshot", "-l", "-U", str(disk)],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    ).stdout


def test_demo_reset_with_and_without_a_server(tmp_path: Path) -> None:
    data = tmp_path / "var"
    data.mkdir()
    server = LiveServer(data)
    try:
        cli_run(server, "snapshots", "create", "demo-db", "one")
        cli_run(server, "snapshots", "create", "demo-db", "two", "--make-room", "buy-slot")
        cli_run(server, "snapshots", "create", "demo-web", "three")
        cli_run(server, "schedules", "set", "demo-web", "--every", "6")
        reset = CliRunner().invoke(cli, ["admin", "demo", "reset", "--data-dir", str(data)])
        assert reset.exit_code == 0, reset.stderr
        assert "3 snapshot(s) deleted" in reset.stdout
        assert "slots restored on demo-db" in reset.stdout
        assert "schedules removed on demo-web" in reset.stdout
        db = cli_run(server, "snapshots", "list", "demo-db")
        assert (db["data"], db["limits"]) == (
            [],
            {"totalSnapshots": 1, "usedSnapshots": 0, "remainingSnapshots": 1},
        )
        assert cli_run(server, "schedules", "get", "demo-web")["schedule"] is None
        assert "one" not in disk_snapshots(data / "disks" / "demo-db.qcow2")
        cli_run(server, "snapshots", "create", "demo-db", "left-behind")
    finally:
        server.stop()
    assert "left-behind" in disk_snapshots(data / "disks" / "demo-db.qcow2")
    # No server: the command runs the deletion itself.
    alone = CliRunner().invoke(cli, ["admin", "demo", "reset", "--data-dir", str(data)])
    assert alone.exit_code == 0, alone.stderr
    assert "1 snapshot(s) deleted" in alone.stdout
    assert "left-behind" not in disk_snapshots(data / "disks" / "demo-db.qcow2")
    # Nothing left to do is fine too.
    again = CliRunner().invoke(cli, ["admin", "demo", "reset", "--data-dir", str(data)])
    assert "0 snapshot(s) deleted" in again.stdout
    nothing = CliRunner().invoke(cli, ["admin", "demo", "reset", "--data-dir", str(tmp_path / "x")])
    assert nothing.exit_code == 4
    assert "no demo data" in nothing.stderr


def test_connections_the_server_accepts_do_not_wait_for_nagle() -> None:
    """asyncio sets TCP_NODELAY only on IPPROTO_TCP sockets and ``socket.create_server`` makes
    proto 0 ones: without ``no_nagle`` every answer's body waited ~40 ms for a delayed ACK."""
    from vpsnap.cli.commands.serve import bind

    with bind("127.0.0.1", 0) as listener, socket.create_connection(listener.getsockname()):
        accepted, _ = listener.accept()
        with accepted:
            assert accepted.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
