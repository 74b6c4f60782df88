"""The ``vps.machine`` JSON column: how vpsnap reaches a VPS's VM, tagged by ``kind``."""

from __future__ import annotations

from typing import Any

from vpsnap.domain.model import LaunchSpec, LibvirtDomain, Machine, QmpAttachment


def machine_to_json(machine: Machine | None) -> dict[str, Any] | None:
    match machine:
        case None:
            return None
        case LaunchSpec():
            return {
                "kind": "qemu-managed",
                "memoryMib": machine.memory_mib,
                "cpus": machine.cpus,
                "extraArgs": list(machine.extra_args),
            }
        case QmpAttachment():
            return {
                "kind": "qemu-attached",
                "qmpSocket": machine.qmp_socket,
                "guestAgentSocket": machine.guest_agent_socket,
            }
        case LibvirtDomain():
            return {"kind": "libvirt", "uri": machine.uri, "domain": machine.domain}


def machine_from_json(data: dict[str, Any] | None) -> Machine | None:
    if data is None:
        return None
    kind = data["kind"]
    if kind == "qemu-managed":
        return LaunchSpec(
            memory_mib=data["memoryMib"], cpus=data["cpus"], extra_args=tuple(data["extraArgs"])
        )
    if kind == "qemu-attached":
        return QmpAttachment(
            qmp_socket=data["qmpSocket"], guest_agent_socket=data.get("guestAgentSocket")
        )
    if kind == "libvirt":
        return LibvirtDomain(uri=data["uri"], domain=data["domain"])
    raise ValueError(f"unknown machine kind {kind!r} in the vps table")
