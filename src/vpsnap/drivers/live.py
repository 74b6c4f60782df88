"""Snapshot operations on a running QEMU, over one QMP session.

Disk-only snapshots of all disks are one ``transaction`` (QEMU applies all or none); snapshots
with RAM are ``snapshot-save`` / ``snapshot-load`` / ``snapshot-delete`` jobs. The caller (the
QEMU driver) decides which to use and owns the all-or-nothing rules around them.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ulid import ULID

from vpsnap.domain.errors import HypervisorError, VmConfigChanged
from vpsnap.domain.model import PowerState, VmConfig
from vpsnap.drivers.qmp import Monitor


# Every QEMU RunState (qapi/run-state.json, QEMU 7.2) in the API's vocabulary, and whether
# vpsnap's `start` may continue (`cont`) the guest from it. Unknown names read `unknown` and are
# never continued. docs/vms.md has the table with the reasons.
@dataclass(frozen=True, slots=True)
class RunState:
    power_state: PowerState
    resumable: bool
    """`start` may `cont` it: the guest's RAM is what it was when it stopped."""


RUN_STATES: dict[str, RunState] = {
    "running": RunState(PowerState.RUNNING, resumable=False),
    "paused": RunState(PowerState.PAUSED, resumable=True),
    # Started with -S, or reset while stopped: the guest has not run since; cont boots it.
    "prelaunch": RunState(PowerState.PAUSED, resumable=True),
    "suspended": RunState(PowerState.PAUSED, resumable=True),  # the guest suspended to RAM
    "debug": RunState(PowerState.PAUSED, resumable=True),  # stopped by the gdb stub
    # A RAM save pauses the guest without changing its memory.
    "save-vm": RunState(PowerState.PAUSED, resumable=True),
    "finish-migrate": RunState(PowerState.PAUSED, resumable=False),
    # Waiting for an incoming migration: no guest state has been loaded yet.
    "inmigrate": RunState(PowerState.STARTING, resumable=False),
    # The guest was migrated away; resuming this copy would run it twice on the same disks.
    "postmigrate": RunState(PowerState.STOPPED, resumable=False),
    "colo": RunState(PowerState.RUNNING, resumable=False),
    # A monitor that answers is past the load (QEMU loads RAM in its main loop, which serves
    # QMP), so this is a load that failed: the disks were rolled back, the RAM half-loaded.
    "restore-vm": RunState(PowerState.ERROR, resumable=False),
    # -no-shutdown keeps the process after the guest powered off: the VM is off.
    "shutdown": RunState(PowerState.STOPPED, resumable=False),
    "guest-panicked": RunState(PowerState.ERROR, resumable=False),
    "internal-error": RunState(PowerState.ERROR, resumable=False),
    # Paused on a disk error (werror=stop); cont retries the I/O, QEMU's own remedy.
    "io-error": RunState(PowerState.ERROR, resumable=True),
    "watchdog": RunState(PowerState.ERROR, resumable=False),
}
_UNKNOWN = RunState(PowerState.UNKNOWN, resumable=False)

# A QOM object vpsnap adds to a VM whose RAM it left half-loaded (a failed RAM restore): it lives
# exactly as long as the QEMU process, so a restarted VM is clean, and reads the same from
# every vpsnap process. `secret` is a user-creatable type every QEMU build has.
RAM_INVALID_MARKER = "vpsnap-ram-invalid"


@dataclass(frozen=True, slots=True)
class VmStatus:
    run_state: str
    state: RunState
    ram_invalid: bool
    """vpsnap left this VM's RAM half-loaded: it must not run until it is reset."""

    @property
    def power_state(self) -> PowerState:
        return PowerState.ERROR if self.ram_invalid else self.state.power_state


async def status(monitor: Monitor) -> VmStatus:
    """The VM's run state, and whether vpsnap marked its RAM invalid."""
    raw = str((await monitor.execute("query-status")).get("status"))
    children = await monitor.execute("qom-list", {"path": "/objects"})
    marked = any(child.get("name") == RAM_INVALID_MARKER for child in children)
    return VmStatus(raw, RUN_STATES.get(raw, _UNKNOWN), marked)


async def run_state(monitor: Monitor) -> PowerState:
    return (await status(monitor)).power_state


async def mark_ram_invalid(monitor: Monitor, reason: str) -> None:
    """Mark the VM's RAM as not to be run (idempotent)."""
    if (await status(monitor)).ram_invalid:
        return
    await monitor.execute(
        "object-add", {"qom-type": "secret", "id": RAM_INVALID_MARKER, "data": reason[:200]}
    )


async def clear_ram_invalid(monitor: Monitor) -> None:
    """The RAM is valid again (a snapshot was loaded, or the guest was reset)."""
    if (await status(monitor)).ram_invalid:
        await monitor.execute("object-del", {"id": RAM_INVALID_MARKER})


async def vm_config(monitor: Monitor) -> VmConfig:
    """RAM size (base plus hot-plugged) and concrete machine type, as QEMU reports them."""
    memory = await monitor.execute("query-memory-size-summary")
    machine = str(await monitor.execute("qom-get", {"path": "/machine", "property": "type"}))
    return VmConfig(
        memory_bytes=int(memory.get("base-memory", 0)) + int(memory.get("plugged-memory", 0)),
        # QOM adds "-machine" to the machine type's name ("pc-i440fx-7.2-machine").
        machine_type=machine.removesuffix("-machine"),
    )


@dataclass(frozen=True, slots=True)
class BlockDevice:
    """One block device of a running VM, as ``query-block`` reports it."""

    guest_id: str
    """How the guest's configuration names it: the drive id (``data0``), else the device id."""
    node: str
    file: str
    format: str
    writable: bool


async def block_devices(monitor: Monitor) -> list[BlockDevice]:
    """Every block device with a medium inserted (empty CD-ROM drives are left out)."""
    found: list[BlockDevice] = []
    for block in await monitor.execute("query-block"):
        inserted = block.get("inserted")
        if not isinstance(inserted, dict):
            continue
        node = str(inserted.get("node-name", ""))
        found.append(
            BlockDevice(
                guest_id=_guest_id(block, node),
                node=node,
                file=str(inserted.get("file", "")),
                format=str(inserted.get("drv", "")),
                writable=not inserted.get("ro", False),
            )
        )
    return found


def _guest_id(block: dict[str, Any], node: str) -> str:
    if block.get("device"):
        return str(block["device"])
    qdev = str(block.get("qdev") or "")
    # "/machine/peripheral/<id>/virtio-backend" for a device given an id on the command line.
    parts = qdev.split("/")
    if len(parts) > 3 and parts[1:3] == ["machine", "peripheral"]:
        return parts[3]
    return qdev or node


async def disk_nodes(monitor: Monitor, disks: Sequence[str]) -> tuple[str, ...]:
    """The node name QEMU uses for each of ``disks`` (image paths), in the same order.

    Managed VMs have fixed names, but attached VMs are configured by someone else
    (``-drive`` gives generated names), so the names are always looked up by file.
    Raises ``VmConfigChanged`` when the running VM does not use a registered disk as qcow2.
    """
    return nodes_of(await block_devices(monitor), disks)


def nodes_of(devices: Sequence[BlockDevice], disks: Sequence[str]) -> tuple[str, ...]:
    nodes: dict[str, str] = {}
    for device in devices:
        if device.format == "qcow2" and device.file:
            nodes.setdefault(_same_file_key(device.file), device.node)
    missing = [disk for disk in disks if _same_file_key(disk) not in nodes]
    if missing:
        numbers = ", ".join(str(list(disks).index(d) + 1) for d in missing)
        raise VmConfigChanged(
            f"The running VM does not use disk {numbers} of the VPS as a qcow2 disk; vpsnap "
            "snapshots a VM only through the disks registered for it.",
            log_detail=f"the running VM has no qcow2 disk {', '.join(missing)} (it uses: "
            f"{', '.join(d.file for d in devices) or '-'})",
        )
    return tuple(nodes[_same_file_key(disk)] for disk in disks)


def uncovered_writable(devices: Sequence[BlockDevice], disks: Sequence[str]) -> tuple[str, ...]:
    """Guest ids of the writable devices that are not registered disks of the VPS.

    QEMU's own ``savevm`` refuses RAM snapshots unless every writable device can be
    snapshotted; vpsnap names the devices of ``snapshot-save``/``snapshot-load`` explicitly
    (its registered disks), which narrows QEMU's check to those, so the check is made here.
    """
    registered = {_same_file_key(disk) for disk in disks}
    return tuple(
        device.guest_id
        for device in devices
        if device.writable and (not device.file or _same_file_key(device.file) not in registered)
    )


async def qdev_of(monitor: Monitor, node: str) -> str:
    """The qdev path of the device a block node is attached to (for HMP ``qemu-io -d``)."""
    for block in await monitor.execute("query-block"):
        inserted = block.get("inserted")
        if isinstance(inserted, dict) and inserted.get("node-name") == node and block.get("qdev"):
            return str(block["qdev"])
    raise HypervisorError(
        "The VM has no device for one of its disks.", log_detail=f"no device uses block node {node}"
    )


async def agent_channel_open(
    monitor: Monitor, socket_path: str, chardev_id: str | None = None
) -> bool | None:
    """Whether a guest agent has opened the virtio-serial port behind ``socket_path``.

    QEMU knows when the guest side of the port is open (``frontend-open``); a closed one means
    no agent runs, so there is no point in waiting for one. The chardev is the one with id
    ``chardev_id`` when given (a VM vpsnap started: its channel listens on a descriptor vpsnap
    bound, so QEMU's ``filename`` names no path while nobody is connected), else the one
    listening at ``socket_path``. None: QEMU has no such chardev (the agent is reached some
    other way), so only asking it tells.
    """
    chardevs = await monitor.execute("query-chardev")
    if chardev_id is not None:
        for chardev in chardevs:
            if chardev.get("label") == chardev_id:
                return bool(chardev.get("frontend-open"))
        return None
    wanted = _same_file_key(socket_path)
    for chardev in chardevs:
        filename = str(chardev.get("filename", "")).removeprefix("disconnected:")
        if not filename.startswith("unix:"):
            continue
        path = filename.removeprefix("unix:").split(",", 1)[0]
        if _same_file_key(path) == wanted:
            return bool(chardev.get("frontend-open"))
    return None


async def take_disk_snapshot(monitor: Monitor, nodes: Sequence[str], name: str) -> None:
    """An internal snapshot called ``name`` on every node, atomically."""
    actions: list[dict[str, Any]] = [
        {"type": "blockdev-snapshot-internal-sync", "data": {"device": node, "name": name}}
        for node in nodes
    ]
    await monitor.execute("transaction", {"actions": actions})


async def delete_disk_snapshot(monitor: Monitor, nodes: Sequence[str], name: str) -> None:
    # By name only: QEMU then never matches a snapshot whose *id* happens to be ``name``.
    for node in nodes:
        await monitor.execute(
            "blockdev-snapshot-delete-internal-sync", {"device": node, "name": name}
        )


async def save_vm(
    monitor: Monitor, nodes: Sequence[str], name: str, *, vmstate_node: str, timeout: float
) -> None:
    """A snapshot with RAM: QEMU pauses the guest, writes RAM to ``vmstate_node``, resumes."""
    await _vm_state_job(
        monitor, "snapshot-save", nodes, name, vmstate_node=vmstate_node, timeout=timeout
    )


async def load_vm(
    monitor: Monitor, nodes: Sequence[str], name: str, *, vmstate_node: str, timeout: float
) -> None:
    """Disks and RAM back to the snapshot; a running guest keeps running, a paused one paused."""
    await _vm_state_job(
        monitor, "snapshot-load", nodes, name, vmstate_node=vmstate_node, timeout=timeout
    )


async def _vm_state_job(
    monitor: Monitor,
    command: str,
    nodes: Sequence[str],
    name: str,
    *,
    vmstate_node: str,
    timeout: float,
) -> None:
    await monitor.run_job(
        command,
        {"tag": name, "vmstate": vmstate_node, "devices": list(nodes)},
        job_id=_job_id(command),
        timeout=timeout,
    )


async def delete_vm(monitor: Monitor, nodes: Sequence[str], name: str, *, timeout: float) -> None:
    await monitor.run_job(
        "snapshot-delete",
        {"tag": name, "devices": list(nodes)},
        job_id=_job_id("snapshot-delete"),
        timeout=timeout,
    )


def _job_id(command: str) -> str:
    # Unique per call: a re-run never collides with a job an earlier attempt left in QEMU.
    return f"vpsnap-{command}-{str(ULID()).lower()}"


def _same_file_key(path: str) -> str:
    return os.path.realpath(path)
