"""What the panel says: states, jobs and refusals in a customer's words.

The API answers with codes and reasons meant for programs (they name endpoints); a person
clicking needs to read what happened and what to do, with the action on this page.
"""

from __future__ import annotations

from datetime import datetime

from vpsnap.domain.model import Job, JobStatus, JobType, Vps
from vpsnap.domain.rules import Gate, SlotUsage
from vpsnap.domain.users import Role

JOB_STATUS = {
    JobStatus.PENDING: "Waiting for an earlier job",
    JobStatus.QUEUED: "Queued",
    JobStatus.IN_PROGRESS: "In progress",
    JobStatus.COMPLETED: "Completed",
    JobStatus.FAILED: "Failed",
}

POWER_ACTIONS = {
    "start": "Start",
    "shutdown": "Shut down",
    "stop": "Stop",
    "restart": "Restart",
    "reset": "Reset",
}

# What a power action costs the running system, said on its confirmation page.
POWER_CONSEQUENCES = {
    "shutdown": "The operating system is asked to shut down; running programs are closed and "
    "the VPS is unreachable until it is started again.",
    "stop": "The VPS is switched off at once, like pulling the plug: anything not yet written "
    "to disk is lost and it is unreachable until it is started again.",
    "restart": "The operating system is asked to shut down and the VPS starts again; it is "
    "unreachable for a moment.",
}
CONFIRMED_POWER_ACTIONS = frozenset(POWER_CONSEQUENCES)


def job_title(job: Job) -> str:
    name = job.snapshot_name or ""
    if job.type is JobType.SNAPSHOT_CREATE:
        return f"Create snapshot {name}"
    if job.type is JobType.SNAPSHOT_DELETE:
        return f"Delete snapshot {name}"
    if job.type is JobType.SNAPSHOT_RESTORE:
        return f"Restore snapshot {name}"
    if job.type is JobType.SNAPSHOT_EXPIRE:
        return f"Expire snapshot {name}"
    if job.type is JobType.SNAPSHOT_SCHEDULED:
        return "Scheduled snapshot" + (f" {name}" if name else "")
    action = str(job.payload.get("action", ""))
    return f"Power: {POWER_ACTIONS.get(action, action).lower()}"


def job_error(job: Job) -> tuple[str, str] | None:
    """The failed job's problem as (title, detail)."""
    if job.error is None:
        return None
    return str(job.error.get("title", "Failed")), str(job.error.get("detail", ""))


def slots_text(usage: SlotUsage) -> str:
    if usage.total == 0:
        return "No snapshot slots on this plan"
    return f"{usage.used} of {usage.total} used"


def create_refusal(gate: Gate, vps: Vps, usage: SlotUsage, role: Role) -> str | None:
    """Why the Create button is disabled, with what to do; None when it is enabled."""
    if gate.allowed:
        return None
    if gate.code == "forbidden":
        return f"Your role ({role.value}) can see snapshots but not take them."
    if gate.code == "snapshot_limit_reached":
        slots = "slot is" if usage.total == 1 else f"{usage.total} slots are"
        every = "The only" if usage.total == 1 else "All"
        return f"{every} {slots} used: delete a snapshot or add a slot."
    if gate.code == "snapshots_not_included":
        return "Snapshots are not included in this VPS's plan: add a slot to take one."
    if gate.code == "vps_not_ready":
        return (
            f"The service of {vps.name} is {vps.service_status.value}, not active: snapshots "
            "can be taken again once it is active. Contact support if that is unexpected."
        )
    return gate.reason


def restore_refusal(gate: Gate, vps: Vps) -> str | None:
    if gate.allowed or gate.code in {"forbidden", "snapshot_not_found"}:
        return None
    if gate.code == "vps_not_ready":
        return (
            f"The service of {vps.name} is {vps.service_status.value}, not active: snapshots "
            "can be restored once it is active."
        )
    return gate.reason


def countdown(until: datetime, now: datetime) -> str:
    """``in 23 h 5 min`` / ``in 4 min`` / ``due now``: how long until ``until``."""
    seconds = int((until - now).total_seconds())
    if seconds <= 0:
        return "due now"
    minutes = max(seconds // 60, 1)
    days, rest = divmod(minutes, 24 * 60)
    hours, minutes = divmod(rest, 60)
    if days:
        return f"in {days} d {hours} h"
    if hours:
        return f"in {hours} h {minutes} min"
    return f"in {minutes} min"
