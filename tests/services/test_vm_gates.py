"""Issue 9 (kinds 2, 3, 5) at the service level: the VM configuration a RAM snapshot fits is
recorded with it and sent with its restore; the listing's gates say what the running VM allows,
and a VM that cannot be asked never fails the listing."""

from __future__ import annotations

import pytest

from tests.services.conftest import World
from vpsnap.domain.errors import MemorySnapshotUnsupported
from vpsnap.domain.model import (
    JobStatus,
    LaunchSpec,
    LibvirtDomain,
    PowerState,
    QmpAttachment,
    VmConfig,
    VmFacts,
    Vps,
)
from vpsnap.domain.ports import SnapshotRequest
from vpsnap.drivers.fake import FAKE_VM_CONFIG
from vpsnap.services.snapshots import CreateSnapshot

MANAGED = LaunchSpec(memory_mib=64, cpus=1)
BIGGER = VmConfig(memory_bytes=128 * 1024 * 1024, machine_type=FAKE_VM_CONFIG.machine_type)


async def running(world: World, machine: object = MANAGED) -> Vps:
    vps = await world.add_vps(machine=machine)  # type: ignore[arg-type]
    world.driver.set_power_state(vps.id, PowerState.RUNNING)
    return vps


async def take(world: World, vps: Vps, name: str, *, memory: bool) -> None:
    await world.runtime.services.snapshots.create(
        world.principal, vps.id, CreateSnapshot(name, include_memory_state=memory)
    )
    await world.run_all()


async def test_a_ram_snapshot_records_the_vm_config_and_its_restore_carries_it(
    world: World,
) -> None:
    vps = await running(world)
    await take(world, vps, "ram", memory=True)
    await take(world, vps, "disks", memory=False)

    ram, disks = await world.snapshot(vps.id, "ram"), await world.snapshot(vps.id, "disks")
    assert ram is not None
    assert disks is not None
    assert ram.vm_config == FAKE_VM_CONFIG
    assert disks.vm_config is None
    job = await world.runtime.services.snapshots.restore(world.principal, vps.id, "ram")
    assert job.payload == {"vmConfig": FAKE_VM_CONFIG.to_json()}


async def test_a_restore_into_a_vm_whose_ram_changed_fails_409_untouched(world: World) -> None:
    vps = await running(world)
    world.driver.write(vps.id, "T0")
    await take(world, vps, "ram", memory=True)
    world.driver.write(vps.id, "T1")
    world.driver.set_vm(vps.id, config=BIGGER)
    await world.publish()

    [item] = (await world.listing(vps.id)).snapshots
    gate = (await world.listing(vps.id)).restore_gates[item.name]
    assert (gate.allowed, gate.code) == (False, "vm_config_changed")
    job = await world.runtime.services.snapshots.restore(world.principal, vps.id, "ram")
    await world.run_all()

    failed = await world.job(job.id)
    assert failed.status is JobStatus.FAILED
    assert failed.error is not None
    assert (failed.error["code"], failed.error["status"]) == ("vm_config_changed", 409)
    assert world.driver.content(vps.id) == "T1"
    assert await world.statuses(vps.id) == {"ram": "available"}


async def test_uncovered_devices_refuse_memory_snapshots_in_the_gate_and_the_job(
    world: World,
) -> None:
    vps = await running(world)
    await take(world, vps, "ram", memory=True)
    world.driver.set_vm(vps.id, uncovered_devices=("data0",))
    await world.publish()

    listing = await world.listing(vps.id)
    assert listing.can_create.allowed is True  # disk-only stays possible
    assert (listing.can_create_with_memory.allowed, listing.can_create_with_memory.code) == (
        False,
        "memory_snapshot_unsupported",
    )
    assert "data0" in (listing.can_create_with_memory.reason or "")
    assert listing.restore_gates["ram"].code == "memory_snapshot_unsupported"
    with pytest.raises(MemorySnapshotUnsupported):
        await world.driver.create_snapshot(vps, SnapshotRequest("x", include_memory_state=True))


async def test_without_a_running_vm_the_gates_add_nothing(world: World) -> None:
    vps = await world.add_vps(machine=MANAGED)  # stopped
    world.driver.set_vm(vps.id, uncovered_devices=("data0",))
    await world.publish()
    listing = await world.listing(vps.id)
    assert listing.can_create_with_memory.allowed is True


async def test_a_vm_that_cannot_be_asked_never_fails_the_listing(world: World) -> None:
    vps = await running(world)

    async def broken(_vps: Vps) -> VmFacts | None:
        raise AssertionError("a library's own assertion")

    world.driver.vm_facts = broken  # type: ignore[method-assign]
    await world.publish()  # the agent's read fails: nothing is known, nothing fails
    listing = await world.listing(vps.id)
    assert listing.can_create.allowed is True
    assert listing.can_create_with_memory.allowed is True  # not known: the job decides


async def test_a_disk_only_restore_of_a_running_attached_vm_is_refused_in_the_gate(
    world: World,
) -> None:
    vps = await running(world, QmpAttachment("/run/vm.qmp"))
    await take(world, vps, "disks", memory=False)
    await take(world, vps, "ram", memory=True)
    await world.publish()
    gates = (await world.listing(vps.id)).restore_gates
    assert (gates["disks"].allowed, gates["disks"].code) == (False, "vps_not_ready")
    assert gates["ram"].allowed is True
    job = await world.runtime.services.snapshots.restore(world.principal, vps.id, "disks")
    await world.run_all()
    failed = await world.job(job.id)
    assert failed.error is not None
    assert failed.error["code"] == "vps_not_ready"


async def test_libvirt_live_snapshots_always_carry_ram_so_can_create_says_so(
    world: World,
) -> None:
    vps = await running(world, LibvirtDomain("qemu:///system", "web"))
    world.driver.set_vm(vps.id, uncovered_devices=("vdb",))
    await world.publish()
    listing = await world.listing(vps.id)
    assert (listing.can_create.allowed, listing.can_create.code) == (
        False,
        "memory_snapshot_unsupported",
    )
