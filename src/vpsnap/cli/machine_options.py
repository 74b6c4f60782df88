"""The VM part of ``vpsnap admin vps add``: which of the machine options go together."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from vpsnap.domain.errors import DomainError
from vpsnap.domain.model import LaunchSpec, Machine, QmpAttachment


def machine_from_options(
    *,
    memory_mib: int | None,
    cpus: int | None,
    qemu_args: Sequence[str],
    qmp_socket: Path | None,
    guest_agent_socket: Path | None,
) -> Machine | None:
    """A managed VM (``--memory-mib``), an attached one (``--qmp-socket``) or none (disks only)."""
    if memory_mib is not None and qmp_socket is not None:
        raise DomainError(
            "choose one: --memory-mib (vpsnap starts and supervises the VM) or --qmp-socket "
            "(vpsnap attaches to a VM someone else runs)"
        )
    if memory_mib is None and (cpus is not None or qemu_args):
        raise DomainError(
            "--cpus and --qemu-arg describe a VM that vpsnap starts; add --memory-mib"
        )
    if guest_agent_socket is not None and qmp_socket is None:
        raise DomainError(
            "--guest-agent-socket belongs to an attached VM (--qmp-socket); a VM vpsnap starts "
            "gets its guest-agent channel in the data dir"
        )
    if memory_mib is not None:
        return LaunchSpec(memory_mib=memory_mib, cpus=cpus or 1, extra_args=tuple(qemu_args))
    if qmp_socket is not None:
        # Absolute paths: the worker may run from another directory than this command.
        return QmpAttachment(
            qmp_socket=str(qmp_socket.resolve()),
            guest_agent_socket=str(guest_agent_socket.resolve()) if guest_agent_socket else None,
        )
    return None
