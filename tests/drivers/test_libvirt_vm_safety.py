"""Issue 9 on the libvirt driver: RAM snapshots and uncovered disks (kind 2), RAM restores into
a changed domain (kind 3, which libvirt handles itself), and one hung libvirtd starving
nothing else in the process (kind 11d: connection sharing)."""

from __future__ import annotations

import asyncio
import dataclasses
import subprocess
import threading
import time
from typing import TYPE_CHECKING, Any

import libvirt  # type: ignore[import-untyped]
import pytest

from vpsnap.domain.errors import MemorySnapshotUnsupported
from vpsnap.domain.model import LibvirtDomain, PowerState
from vpsnap.domain.ports import SnapshotRequest
from vpsnap.drivers.libvirt import LibvirtDriver

from .libvirt_lab import URI, LibvirtLab
from .support import make_vps

if TYPE_CHECKING:
    from pathlib import Path

    from .support import DiskFactory


def add_raw_disk(lab: LibvirtLab, dom: Any, raw: Path) -> None:
    xml = str(dom.XMLDesc(0)).replace(
        "</devices>",
        f"<disk type='file' device='disk'><driver name='qemu' type='raw'/>"
        f"<source file='{raw}'/><target dev='hdb' bus='ide'/></disk></devices>",
    )
    lab.conn.defineXML(xml)


@pytest.mark.qemu
@pytest.mark.libvirt
async def test_a_live_domain_with_an_uncovered_raw_disk_refuses_ram_snapshots_with_409(
    lab: LibvirtLab, libvirt_driver: LibvirtDriver, make_disks: DiskFactory, tmp_path: Path
) -> None:
    [qcow2] = await make_disks(1)
    raw = tmp_path / "data.raw"
    await asyncio.to_thread(
        subprocess.run, ["qemu-img", "create", "-q", "-f", "raw", str(raw), "16M"], check=True
    )
    domain = lab.define((qcow2,))
    add_raw_disk(lab, domain.dom, raw)
    domain.dom.create()
    vps = domain.vps()

    facts = await libvirt_driver.vm_facts(vps)
    assert facts is not None
    assert facts.uncovered_devices == ("hdb",)
    assert facts.live_snapshots_include_memory is True
    assert facts.config is not None
    assert facts.config.memory_bytes == 64 * 1024 * 1024
    # libvirt takes live snapshots only with RAM, so every live snapshot is refused, with a
    # 409 that says why (before: libvirt's "unsupported configuration" as 503).
    with pytest.raises(MemorySnapshotUnsupported) as caught:
        await libvirt_driver.create_snapshot(vps, SnapshotRequest(name="s"))
    assert caught.value.extensions == {"devices": ["hdb"]}
    assert str(raw) not in caught.value.detail
    assert await libvirt_driver.list_restore_points(vps) == []


@pytest.mark.qemu
@pytest.mark.libvirt
async def test_libvirt_restores_a_ram_snapshot_with_the_domain_definition_it_was_taken_with(
    lab: LibvirtLab, libvirt_driver: LibvirtDriver, make_disks: DiskFactory
) -> None:
    # Kind 3 on libvirt: the snapshot keeps the domain's definition, and a revert into a
    # domain that was given more RAM since restarts it with the snapshot's definition (checked
    # with libvirt 9): no half-loaded RAM, nothing for vpsnap to check on top.
    domain = lab.define(await make_disks(1))
    domain.dom.create()
    vps = domain.vps()
    await libvirt_driver.create_snapshot(vps, SnapshotRequest(name="ram"))
    domain.dom.destroy()
    lab.conn.defineXML(
        str(domain.dom.XMLDesc(0))
        .replace("<memory unit='KiB'>65536</memory>", "<memory unit='KiB'>81920</memory>")
        .replace("<currentMemory unit='KiB'>65536</currentMemory>", "")
    )
    domain.dom.create()
    assert domain.dom.info()[1] == 81920

    outcome = await libvirt_driver.restore_snapshot(vps, "ram")

    assert outcome.power_state_after is PowerState.RUNNING
    assert domain.dom.info()[1] == 65536  # the snapshot's RAM size again
    facts = await libvirt_driver.vm_facts(vps)
    assert facts is not None
    assert facts.restore_reverts_definition is True


async def test_a_hung_libvirtd_does_not_starve_the_rest_of_the_process() -> None:
    # Every libvirt call runs in a thread that a hung libvirtd keeps until it answers; the
    # caller gives up at its timeout, the thread cannot. In the process-wide default pool
    # (min(32, cores + 4) threads) a handful of such calls blocked every other to_thread of
    # the process — the QEMU driver's image reads of every other VPS among them.
    hang = threading.Event()

    def opener(_uri: str) -> Any:
        hang.wait(30)
        raise libvirt.libvirtError("never connects")

    driver = LibvirtDriver(status_timeout=0.2, opener=opener)
    vps = dataclasses.replace(make_vps(("/none.qcow2",)), machine=LibvirtDomain(URI, "hung"))
    try:
        states = await asyncio.gather(*(driver.power_state(vps) for _ in range(40)))
        assert set(states) == {PowerState.UNKNOWN}
        started = time.monotonic()
        # Someone else's work on the default pool still runs at once.
        assert await asyncio.wait_for(asyncio.to_thread(lambda: 42), 5) == 42
        assert time.monotonic() - started < 1
    finally:
        hang.set()
        driver.close()
