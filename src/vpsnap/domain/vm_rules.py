"""Gates that depend on the running VM (issue 9, kinds 2, 3, 5): what the driver would refuse,
said before the work is accepted.

They refine the gates of ``vpsnap.domain.rules`` with ``VmFacts`` (``HypervisorDriver.vm_facts``)
and never loosen them. Without facts (no VM runs, or it did not answer in time) they add
nothing: a snapshot of a stopped VM has no RAM state and a restore of one is disk-only, and a
VM that could not be asked is checked by the job itself, which refuses what cannot work with
the same code. A gate is advisory; the job stays the authority.
"""

from __future__ import annotations

from vpsnap.domain.auth import Principal, Scope
from vpsnap.domain.model import Snapshot, SnapshotStatus, VmFacts, Vps
from vpsnap.domain.rules import ALLOWED, Gate, service_gate


def restore_base(vps: Vps, principal: Principal | None) -> Gate:
    """What every restore of the VPS needs (scope, active service), whichever snapshot."""
    if principal is not None and not principal.has(Scope.BACKUP_VM):
        return Gate.refused("The credential lacks the backup:vm scope.", "forbidden")
    return service_gate(vps)


def memory_gate(base: Gate, facts: VmFacts | None) -> Gate:
    """Whether a snapshot *with RAM state* can be taken now (``canCreateWithMemory``).

    RAM state must cover every writable device of the VM: one that is not a registered disk of
    the VPS would keep its newer data under an older RAM, which corrupts a real guest.
    """
    if not base.allowed or facts is None or not facts.uncovered_devices:
        return base
    return Gate.refused(
        f"The VM has writable devices that a snapshot of the VPS's disks does not cover "
        f"({', '.join(facts.uncovered_devices)}), so RAM state cannot be saved with it. A "
        "disk-only snapshot is possible.",
        "memory_snapshot_unsupported",
    )


def live_create_gate(base: Gate, facts: VmFacts | None) -> Gate:
    """``canCreate`` on a hypervisor whose live snapshots always carry RAM (libvirt)."""
    if facts is not None and facts.live_snapshots_include_memory:
        return memory_gate(base, facts)
    return base


def restore_gate(snapshot: Snapshot, base: Gate, facts: VmFacts | None) -> Gate:
    """Whether ``snapshot`` can be restored now (a snapshot's ``actions.canRestore``).

    ``base`` is ``restore_base`` (scope, service status). The rest mirrors what the restore
    service and the drivers refuse.
    """
    gate = _status_gate(snapshot, base)
    if not gate.allowed or facts is None:
        return gate
    if snapshot.includes_memory_state:
        return _memory_restore_gate(snapshot, facts)
    if not facts.restarts_for_disk_restore:
        return Gate.refused(
            "The snapshot has no RAM state and the VM runs, but vpsnap does not manage it and "
            "cannot start it again after rolling its disks back. Stop it first.",
            "vps_not_ready",
        )
    return ALLOWED


def _status_gate(snapshot: Snapshot, base: Gate) -> Gate:
    if not base.allowed:
        return base
    if snapshot.status is SnapshotStatus.FAILED:
        return Gate.refused(
            "The snapshot is missing from the disks; it can only be deleted.", "snapshot_not_found"
        )
    if snapshot.status in (SnapshotStatus.CREATING, SnapshotStatus.DELETING):
        return Gate.refused(f"The snapshot is {snapshot.status.value}.", "snapshot_busy")
    return ALLOWED


def _memory_restore_gate(snapshot: Snapshot, facts: VmFacts) -> Gate:
    if facts.restore_reverts_definition:
        return ALLOWED
    if facts.uncovered_devices:
        return Gate.refused(
            f"The VM has writable devices the snapshot's RAM state does not cover "
            f"({', '.join(facts.uncovered_devices)}). Stop the VM to restore the disks only.",
            "memory_snapshot_unsupported",
        )
    recorded, current = snapshot.vm_config, facts.config
    if recorded is not None and current is not None and recorded != current:
        return Gate.refused(
            f"The snapshot's RAM state is for a VM with {recorded.describe()}; the VM now has "
            f"{current.describe()}. Run it with the snapshot's configuration, or stop it to "
            "restore the disks only.",
            "vm_config_changed",
        )
    return ALLOWED
