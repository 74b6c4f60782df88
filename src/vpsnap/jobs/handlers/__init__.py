"""One handler per job type; ``HANDLERS`` maps the type to it."""

from __future__ import annotations

from vpsnap.domain.model import JobType
from vpsnap.jobs.handlers.base import JobHandler
from vpsnap.jobs.handlers.create import CreateSnapshotHandler
from vpsnap.jobs.handlers.delete import DeleteSnapshotHandler
from vpsnap.jobs.handlers.power import PowerHandler
from vpsnap.jobs.handlers.restore import RestoreSnapshotHandler
from vpsnap.jobs.handlers.scheduled import ScheduledSnapshotHandler

HANDLERS: dict[JobType, JobHandler] = {
    JobType.VPS_POWER: PowerHandler(),
    JobType.SNAPSHOT_CREATE: CreateSnapshotHandler(),
    JobType.SNAPSHOT_DELETE: DeleteSnapshotHandler(),
    JobType.SNAPSHOT_EXPIRE: DeleteSnapshotHandler(),
    JobType.SNAPSHOT_RESTORE: RestoreSnapshotHandler(),
    JobType.SNAPSHOT_SCHEDULED: ScheduledSnapshotHandler(),
}

__all__ = ["HANDLERS", "JobHandler"]
