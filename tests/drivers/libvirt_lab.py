"""A real libvirtd for the libvirt tests: reach it (starting it if needed) and define
throwaway domains (TCG, 64 MiB, qcow2 disks in the test's temporary directory, no OS)."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import subprocess
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from vpsnap.domain.model import LibvirtDomain, Vps
from vpsnap.drivers.libvirt import LibvirtDriver

from .support import make_vps

if TYPE_CHECKING:
    from collections.abc import Iterator

URI = "qemu:///system"
ROOT = Path(__file__).resolve().parents[2]
PREFIX = "vpsnap-test-"
# Data lands at different places on each disk so a restore of only one disk cannot pass.
REGIONS = ((0, 64 * 1024), (1024 * 1024, 128 * 1024))


def connect_or_skip() -> Any:
    """A connection to the test libvirtd. Not installed: fail (CI installs it). Installed but
    the daemon cannot run here: skip, saying why as loudly as pytest allows."""
    try:
        import libvirt
    except ImportError:
        pytest.fail("libvirt-python is missing: ./scripts/install installs the libvirt extra")
    libvirt.registerErrorHandler(lambda _ctx, _err: None, None)
    try:
        return libvirt.open(URI)
    except libvirt.libvirtError:
        pass
    started = subprocess.run(
        [str(ROOT / "scripts" / "libvirtd")], capture_output=True, text=True, check=False
    )
    try:
        return libvirt.open(URI)
    except libvirt.libvirtError as exc:
        pytest.skip(
            f"LIBVIRTD CANNOT RUN HERE, libvirt tests skipped: {exc}; "
            f"scripts/libvirtd said: {(started.stderr or started.stdout).strip()}"
        )


@dataclass
class LabDomain:
    dom: Any
    name: str
    uuid: str
    disks: tuple[str, ...]

    def vps(self, vps_id: str = "vps-1", *, by_name: bool = False) -> Vps:
        machine = LibvirtDomain(URI, self.name if by_name else self.uuid)
        return dataclasses.replace(make_vps(self.disks, vps_id), machine=machine)


class LibvirtLab:
    """Defines persistent test domains and removes them (and their snapshots) afterwards."""

    def __init__(self, conn: Any) -> None:
        self.conn = conn
        self._uuids: list[str] = []

    def define(self, disks: tuple[str, ...], *, agent: bool = False) -> LabDomain:
        name = f"{PREFIX}{uuid.uuid4().hex[:10]}"
        # IDE disks: HMP `qemu-io -d ide0-0-N` reaches them by device id (virtio-blk's id
        # names the PCI proxy, which has no block backend).
        devices = "".join(
            f"<disk type='file' device='disk'><driver name='qemu' type='qcow2'/>"
            f"<source file='{path}'/><target dev='hd{'ab'[i]}' bus='ide'/></disk>"
            for i, path in enumerate(disks)
        )
        if agent:
            devices += (
                "<channel type='unix'><target type='virtio' name='org.qemu.guest_agent.0'/>"
                "</channel>"
            )
        xml = (
            f"<domain type='qemu'><name>{name}</name><memory unit='MiB'>64</memory>"
            "<vcpu>1</vcpu><os><type arch='x86_64' machine='pc'>hvm</type></os>"
            f"<on_crash>destroy</on_crash><devices>{devices}</devices></domain>"
        )
        dom = self.conn.defineXML(xml)
        self._uuids.append(str(dom.UUIDString()))
        return LabDomain(dom, name, str(dom.UUIDString()), disks)

    def reconnect(self) -> None:
        """A new connection (after libvirtd restarted); domains must be looked up again."""
        self.conn = connect_or_skip()

    def cleanup(self) -> None:
        import libvirt

        for domain_uuid in self._uuids:
            try:
                dom = self.conn.lookupByUUIDString(domain_uuid)
                if dom.isActive():
                    dom.destroy()
                for snap in dom.listAllSnapshots(0):
                    snap.delete(libvirt.VIR_DOMAIN_SNAPSHOT_DELETE_METADATA_ONLY)
                dom.undefineFlags(libvirt.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA)
            except libvirt.libvirtError as exc:
                if exc.get_error_code() != libvirt.VIR_ERR_NO_DOMAIN:
                    raise


# -- data on the disks ---------------------------------------------------------------------------


def hmp(dom: Any, command: str) -> str:
    import libvirt_qemu

    return str(
        libvirt_qemu.qemuMonitorCommand(
            dom, command, libvirt_qemu.VIR_DOMAIN_QEMU_MONITOR_COMMAND_HMP
        )
    )


def _qemu_io_live(dom: Any, index: int, command: str) -> None:
    # HMP qemu-io prints its results on QEMU's stdout (the domain log), not in the reply: an
    # empty reply means the command ran, anything else is an error message.
    reply = hmp(dom, f'qemu-io -d ide0-0-{index} "{command}"').strip()
    assert not reply, reply


async def write(domain: LabDomain, pattern: int) -> None:
    """Overwrite the test regions of every disk: through the running VM, or on the files."""
    live = bool(domain.dom.isActive())
    for index, (disk, (offset, length)) in enumerate(zip(domain.disks, REGIONS, strict=False)):
        command = f"write -P 0x{pattern:02x} {offset} {length}"
        if live:
            await asyncio.to_thread(_qemu_io_live, domain.dom, index, command)
            await asyncio.to_thread(_qemu_io_live, domain.dom, index, "flush")
        else:
            await _qemu_io(["-f", "qcow2", "-c", command, disk])


async def holds(domain: LabDomain, pattern: int) -> bool:
    """Whether every disk's test region is exactly ``pattern``. A running VM flushes first, then
    the file is read next to it (-U: without taking its lock)."""
    live = bool(domain.dom.isActive())
    results = []
    for index, (disk, (offset, length)) in enumerate(zip(domain.disks, REGIONS, strict=False)):
        if live:
            await asyncio.to_thread(_qemu_io_live, domain.dom, index, "flush")
        out = await _qemu_io(
            ["-U", "-r", "-f", "qcow2", "-c", f"read -P 0x{pattern:02x} {offset} {length}", disk]
        )
        results.append("Pattern verification failed" not in out)
    return all(results)


async def _qemu_io(args: list[str]) -> str:
    proc = await asyncio.create_subprocess_exec(
        "qemu-io",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "LC_ALL": "C"},
    )
    out, err = await proc.communicate()
    text = out.decode() + err.decode()
    assert "Pattern verification failed" in text or proc.returncode == 0, text
    return text


# -- fixtures (imported by tests/drivers/conftest.py) -------------------------------------------


@pytest.fixture
def libvirt_conn() -> Iterator[Any]:
    conn = connect_or_skip()
    yield conn
    conn.close()


@pytest.fixture
def lab(libvirt_conn: Any) -> Iterator[LibvirtLab]:
    lab = LibvirtLab(libvirt_conn)
    yield lab
    lab.cleanup()
    if lab.conn is not libvirt_conn:
        lab.conn.close()


@pytest.fixture
def libvirt_driver() -> Iterator[LibvirtDriver]:
    # A short graceful-shutdown timeout: the test domains have no OS to answer ACPI. A long
    # status timeout: a busy CI machine must not turn a state read into `unknown`.
    driver = LibvirtDriver(shutdown_timeout=2.0, status_timeout=30.0)
    yield driver
    driver.close()
