"""`vpsnap admin vps import-libvirt` against a real libvirtd, then the imported VPS in use."""

from __future__ import annotations

import asyncio
import subprocess
from typing import TYPE_CHECKING

import pytest
from click.testing import CliRunner

from tests.drivers.libvirt_lab import URI, LibvirtLab, connect_or_skip
from vpsnap.cli.entry import cli as app
from vpsnap.domain.model import LibvirtDomain, PowerState
from vpsnap.domain.ports import SnapshotRequest
from vpsnap.runtime import Runtime
from vpsnap.settings import Settings

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from vpsnap.domain.model import Vps

pytestmark = [pytest.mark.qemu, pytest.mark.libvirt]
runner = CliRunner()


@pytest.fixture
def lab() -> Iterator[LibvirtLab]:
    conn = connect_or_skip()
    lab = LibvirtLab(conn)
    yield lab
    lab.cleanup()
    conn.close()


def vpsnap(data_dir: Path, *args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, [*args, "--data-dir", str(data_dir)])
    return result.exit_code, result.stdout, result.stderr


def image(path: Path, fmt: str = "qcow2") -> str:
    subprocess.run(["qemu-img", "create", "-q", "-f", fmt, str(path), "16M"], check=True)
    return str(path)


def all_vps(data_dir: Path) -> list[Vps]:
    async def read() -> list[Vps]:
        runtime = Runtime.build(Settings(data_dir=data_dir))
        try:
            return [vps for vps, _ in await runtime.services.accounts.list_vps()]
        finally:
            await runtime.close()

    return asyncio.run(read())


def test_import_adds_domains_once_and_the_vps_snapshots_through_libvirt(
    lab: LibvirtLab, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    good = lab.define((image(tmp_path / "a0.qcow2"), image(tmp_path / "a1.qcow2")))
    raw = lab.define((image(tmp_path / "b0.raw", "raw"),))
    # Declared qcow2 by default; say raw, as a real domain on a raw image would.
    lab.conn.defineXML(raw.dom.XMLDesc(0).replace("type='qcow2'", "type='raw'"))
    assert vpsnap(data, "admin", "account", "create", "acme")[0] == 0
    args = ("admin", "vps", "import-libvirt", "--uri", URI, "--account", "acme", "--slots", "2")
    only = ("--domain", good.name, "--domain", raw.uuid)

    code, out, err = vpsnap(data, *args, *only)

    assert code == 0, err
    assert out.count("imported") == 1
    assert out.count("skipped") == 1
    assert "qcow2" in out  # why the raw-disk domain was skipped
    [vps] = all_vps(data)
    assert vps.name == good.name
    assert vps.machine == LibvirtDomain(URI, good.uuid)
    assert vps.disks == good.disks
    assert vps.snapshot_slots == 2
    assert vps.resources.memory_gb == pytest.approx(64 / 1024, abs=0.01)

    code, out, _ = vpsnap(data, *args, *only)
    assert code == 0
    assert out.count("skipped") == 2
    assert "already" in out
    assert [v.name for v in all_vps(data)] == [good.name]

    # The runtime's driver sends the imported VPS to libvirt.
    async def use() -> list[str]:
        runtime = Runtime.build(Settings(data_dir=data))
        try:
            assert await runtime.driver.power_state(vps) is PowerState.STOPPED
            await runtime.driver.create_snapshot(vps, SnapshotRequest(name="first"))
            return [p.name for p in await runtime.driver.list_restore_points(vps)]
        finally:
            await runtime.close()

    assert asyncio.run(use()) == ["first"]
    assert [s.getName() for s in good.dom.listAllSnapshots(0)] == ["first"]


def test_import_errors_name_what_is_wrong(lab: LibvirtLab, tmp_path: Path) -> None:
    data = tmp_path / "data"
    assert vpsnap(data, "admin", "account", "create", "acme")[0] == 0

    code, _, err = vpsnap(data, "admin", "vps", "import-libvirt", "--account", "nobody")
    assert code == 3
    assert "No account named 'nobody'" in err

    code, _, err = vpsnap(
        data, "admin", "vps", "import-libvirt", "--account", "acme", "--domain", "no-such-domain"
    )
    assert code == 4  # a conflict (vm_config_changed: the libvirt domain is not there)
    assert "no-such-domain" in err
