"""Snapshot operations on a running QEMU, over one QMP session.

Disk-only snapshots of all disks are one ``transaction`` (QEMU applies all or none); snapshots
with RAM are ``snapshot-save`` / ``snapshot-load`` / ``snapshot-delete`` jobs. The caller (the
QEMU driver) decides which to use and owns the all-or-nothing rules around them.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from ulid import ULID

from vpsnap.domain.errors import HypervisorError
from vpsnap.domain.model import PowerState
from vpsnap.drivers.qmp import Monitor

# QEMU's RunState names (qapi/run-state.json) in the API's vocabulary.
_RUN_STATES = {
    "running": PowerState.RUNNING,
    "paused": PowerState.PAUSED,
    "prelaunch": PowerState.PAUSED,
    "suspended": PowerState.PAUSED,
    "debug": PowerState.PAUSED,
    "inmigrate": PowerState.PAUSED,
    "postmigrate": PowerState.PAUSED,
    "finish-migrate": PowerState.PAUSED,
    "save-vm": PowerState.PAUSED,
    "restore-vm": PowerState.PAUSED,
    "colo": PowerState.RUNNING,
    # -no-shutdown keeps the process after the guest powered off: the VM is off.
    "shutdown": PowerState.STOPPED,
    "guest-panicked": PowerState.ERROR,
    "internal-error": PowerState.ERROR,
    "io-error": PowerState.ERROR,
    "watchdog": PowerState.ERROR,
}


async def run_state(monitor: Monitor) -> PowerState:
    status = await monitor.execute("query-status")
    return _RUN_STATES.get(str(status.get("status")), PowerState.UNKNOWN)


async def disk_nodes(monitor: Monitor, disks: Sequence[str]) -> tuple[str, ...]:
    """The node name QEMU uses for each of ``disks`` (image paths), in the same order.

    Managed VMs have fixed names, but attached VMs are configured by someone else
    (``-drive`` gives generated names), so the names are always looked up by file.
    """
    nodes: dict[str, str] = {}
    for block in await monitor.execute("query-block"):
        inserted = block.get("inserted")
        if not isinstance(inserted, dict) or inserted.get("drv") != "qcow2":
            continue
        filename = inserted.get("file")
        if isinstance(filename, str):
            nodes.setdefault(_same_file_key(filename), str(inserted["node-name"]))
    missing = [disk for disk in disks if _same_file_key(disk) not in nodes]
    if missing:
        raise HypervisorError(
            f"the running VM has no qcow2 disk {', '.join(missing)}; vpsnap snapshots a VM "
            f"only through the disks registered for it (the VM uses: {', '.join(nodes) or '-'})"
        )
    return tuple(nodes[_same_file_key(disk)] for disk in disks)


async def qdev_of(monitor: Monitor, node: str) -> str:
    """The qdev path of the device a block node is attached to (for HMP ``qemu-io -d``)."""
    for block in await monitor.execute("query-block"):
        inserted = block.get("inserted")
        if isinstance(inserted, dict) and inserted.get("node-name") == node and block.get("qdev"):
            return str(block["qdev"])
    raise HypervisorError(f"no device uses block node {node}")


async def agent_channel_open(monitor: Monitor, socket_path: str) -> bool | None:
    """Whether a guest agent has opened the virtio-serial port behind ``socket_path``.

    QEMU knows when the guest side of the port is open (``frontend-open``); a closed one means
    no agent runs, so there is no point in waiting for one. None: QEMU has no chardev at that
    path (the agent is reached some other way), so only asking it tells.
    """
    wanted = _same_file_key(socket_path)
    for chardev in await monitor.execute("query-chardev"):
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
