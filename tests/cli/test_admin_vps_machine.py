"""`vpsnap admin vps add` with a VM: managed (--memory-mib) or attached (--qmp-socket)."""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner

from vpsnap.cli.entry import cli as app
from vpsnap.domain.model import LaunchSpec, QmpAttachment
from vpsnap.runtime import Runtime
from vpsnap.settings import Settings

pytestmark = pytest.mark.qemu
runner = CliRunner()


def add(data_dir: Path, name: str, *args: str) -> tuple[int, str]:
    disk = data_dir / f"{name}.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(disk), "16M"], check=True)
    result = runner.invoke(
        app,
        [
            *("admin", "vps", "add", "--account", "acme", "--name", name),
            *("--disk", str(disk), "--slots", "1", *args, "--data-dir", str(data_dir)),
        ],
    )
    return result.exit_code, result.stdout + result.stderr


def machines(data_dir: Path) -> dict[str, object]:
    async def read() -> dict[str, object]:
        runtime = Runtime.build(Settings(data_dir=data_dir))
        try:
            return {v.name: v.machine for v, _ in await runtime.services.accounts.list_vps()}
        finally:
            await runtime.close()

    return asyncio.run(read())


def test_managed_attached_and_disk_only_vpses(tmp_path: Path) -> None:
    runner.invoke(app, ["admin", "account", "create", "acme", "--data-dir", str(tmp_path)])

    code, out = add(
        tmp_path, "managed", "--memory-mib", "256", "--cpus", "2", "--qemu-arg", "-rtc",
        "--qemu-arg", "base=utc",
    )  # fmt: skip
    assert code == 0, out
    code, out = add(
        tmp_path, "attached", "--qmp-socket", "run/qmp.sock", "--guest-agent-socket", "run/qga"
    )
    assert code == 0, out
    code, out = add(tmp_path, "disks")
    assert code == 0, out

    found = machines(tmp_path)
    assert found["managed"] == LaunchSpec(256, 2, ("-rtc", "base=utc"))
    attached = found["attached"]
    assert isinstance(attached, QmpAttachment)
    assert Path(attached.qmp_socket).is_absolute()
    assert attached.qmp_socket.endswith("run/qmp.sock")
    assert attached.guest_agent_socket is not None
    assert attached.guest_agent_socket.endswith("run/qga")
    assert found["disks"] is None


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--memory-mib", "256", "--qmp-socket", "/q.sock"), "choose one"),
        (("--cpus", "2"), "add --memory-mib"),
        (("--qemu-arg", "-S"), "add --memory-mib"),
        (("--guest-agent-socket", "/qga"), "belongs to an attached VM"),
    ],
)
def test_bad_combinations_are_refused(tmp_path: Path, args: tuple[str, ...], message: str) -> None:
    runner.invoke(app, ["admin", "account", "create", "acme", "--data-dir", str(tmp_path)])
    code, out = add(tmp_path, "bad", *args)
    assert code == 2
    assert message in " ".join(out.split())
    assert machines(tmp_path) == {}
