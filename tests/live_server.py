"""A real ``vpsnap serve --demo`` in a subprocess (real HTTP on 127.0.0.1, real qcow2 disks),
for the tests of the SDK and the client commands.

Every test that changes state takes a VPS of its own (``add_vps``), so the tests share one
server per suite without depending on each other's leftovers.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
from click.testing import CliRunner

from vpsnap.cli.entry import cli as app

# The console script of this venv: the entry point users run, not a module path.
VPSNAP = str(Path(sys.executable).with_name("vpsnap"))
START_TIMEOUT = 60.0
STOP_TIMEOUT = 20.0
SLOW_SECONDS = 2

# qemu-img that takes SLOW_SECONDS to create a snapshot named slow-…, so that tests can watch
# a job run (long-poll, timeouts). Everything else is the real qemu-img, at once.
SLOW_QEMU_IMG = """#!/bin/sh
case " $* " in
  *" -c slow-"*) sleep {seconds} ;;
esac
exec {qemu_img} "$@"
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ServerProcess:
    """``vpsnap serve`` as a process group of its own (a stop or kill takes its qemu-img
    children too), started on a free port and waited for until ``ready_path`` answers 200.

    Each instance logs to ``server-<port>.log`` in the data dir, so a restarted server on the
    same data dir keeps the first one's log.
    """

    def __init__(
        self,
        data_dir: Path,
        *serve_args: str,
        env: dict[str, str],
        ready_path: str = "/readyz",
    ) -> None:
        self.data_dir = data_dir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = data_dir / f"server-{self.port}.log"
        self._log = self.log_path.open("wb")
        self.process = subprocess.Popen(
            [VPSNAP, "serve", *serve_args, "--port", str(self.port), "--data-dir", str(data_dir)],
            env={**os.environ, **env},
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            self._wait_ready(ready_path)
        except BaseException:
            self.stop()
            raise

    def _wait_ready(self, ready_path: str) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"vpsnap serve exited:\n{self.read_log()}")
            try:
                if httpx.get(f"{self.url}{ready_path}", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"vpsnap serve was not ready in {START_TIMEOUT} s:\n{self.read_log()}")

    def read_log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def kill(self) -> None:
        """SIGKILL, as a crash would: no shutdown code runs."""
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=STOP_TIMEOUT)
        self._log.close()

    def kill_server_only(self) -> None:
        """SIGKILL of the server process alone (``kill -9 PID``): children in sessions of
        their own, such as qemu-img, are not signalled by this."""
        self.process.kill()
        self.process.wait(timeout=STOP_TIMEOUT)
        self._log.close()

    def terminate(self) -> int:
        """SIGTERM to the server process alone, as systemd's stop does; returns its exit code
        once it has exited."""
        self.process.terminate()
        code = self.process.wait(timeout=STOP_TIMEOUT)
        self._log.close()
        return code

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=STOP_TIMEOUT)
        self._log.close()


class LiveServer(ServerProcess):
    """``vpsnap serve --demo`` with a qemu-img that can be made slow, for the SDK and CLI."""

    _names = itertools.count(1)

    def __init__(self, data_dir: Path, **settings: str) -> None:
        qemu_img = shutil.which("qemu-img")
        assert qemu_img is not None, "qemu-img is not installed (run scripts/install)"
        wrapper = data_dir / "slow-qemu-img"
        wrapper.write_text(SLOW_QEMU_IMG.format(seconds=SLOW_SECONDS, qemu_img=qemu_img))
        wrapper.chmod(0o755)
        env = {
            "VPSNAP_LOG_LEVEL": "warning",
            "VPSNAP_QEMU_IMG": str(wrapper),
            "VPSNAP_RATE_LIMIT_PER_KEY": "100000/minute",
            "VPSNAP_RATE_LIMIT_PER_IP": "100000/minute",
            "VPSNAP_RATE_LIMIT_SNAPSHOT_MUTATIONS_PER_VPS": "100000/minute",
            # No demo VM: it would outlive the server (managed VMs do) and every test run.
            "VPSNAP_DEMO_VM": "false",
            # Real argon2id at its lowest allowed cost: the demo seeds three panel users.
            "VPSNAP_PASSWORD_HASH_TIME_COST": "1",
            "VPSNAP_PASSWORD_HASH_MEMORY_KIB": "8192",
            "VPSNAP_PASSWORD_HASH_PARALLELISM": "1",
            **settings,
        }
        super().__init__(data_dir, "--demo", env=env)
        self.tokens: dict[str, str] = json.loads((data_dir / "demo-tokens.json").read_text())

    def key(self, label: str = "full") -> str:
        return self.tokens[label]

    def disk(self, vps_name: str) -> Path:
        return self.data_dir / "vps-disks" / f"{vps_name}.qcow2"

    def add_vps(
        self,
        slots: int,
        *,
        account: str = "demo",
        primary_ip: str | None = None,
        vm_memory_mib: int | None = None,
    ) -> str:
        """A new VPS of its own for one test (admin command on the server's data dir, which
        the running server reads at once); returns its name."""
        name = f"t{next(self._names)}-{slots}slots"
        disk = self.disk(name)
        disk.parent.mkdir(exist_ok=True)
        subprocess.run(
            ["qemu-img", "create", "-q", "-f", "qcow2", str(disk), "16M"], check=True, timeout=30
        )
        args = ["admin", "vps", "add", "--account", account, "--name", name]
        args += ["--disk", str(disk), "--slots", str(slots), "--data-dir", str(self.data_dir)]
        if primary_ip:
            args += ["--primary-ip", primary_ip]
        if vm_memory_mib:  # a VM vpsnap runs (stopped until a start action)
            args += ["--memory-mib", str(vm_memory_mib)]
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 0, (result.stdout, result.stderr)
        return name

    def foreign_snapshot(self, vps_name: str, tag: str) -> None:
        """A snapshot on the VPS's disk that vpsnap did not make (vpsnap never touches it)."""
        subprocess.run(
            ["qemu-img", "snapshot", "-c", tag, str(self.disk(vps_name))], check=True, timeout=30
        )
