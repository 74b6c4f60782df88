"""Request and response bodies of ``/api/v2/vps/{id}/snapshot-schedules`` (contract section 8)."""

from __future__ import annotations

from pydantic import Field

from vpsnap.api.schemas import ApiModel, GateOut, LimitsOut, RequestModel, Timestamp
from vpsnap.domain.schedules import MAX_INTERVAL_HOURS, MIN_INTERVAL_HOURS


class ScheduleIn(RequestModel):
    enabled: bool = Field(description="Whether the schedule takes snapshots.")
    interval_hours: float = Field(
        allow_inf_nan=False,
        description=(
            f"Hours between runs; floored and clamped to {MIN_INTERVAL_HOURS}.."
            f"{MAX_INTERVAL_HOURS} (3.7 → 4, 6.9 → 6, 30 → 24)."
        ),
        examples=[6],
    )


class ScheduleOut(ApiModel):
    enabled: bool
    interval_hours: int
    next_run_at: Timestamp | None = Field(description="Null while the schedule is disabled.")
    last_run_at: Timestamp | None = Field(
        description="When the last run ended (completed, failed or skipped)."
    )
    last_run_status: str | None = Field(
        description="`ok`, `failed: <why>` or `skipped: <why>`; null before the first run.",
        examples=["skipped: all 3 slots hold manual snapshots"],
    )
    created_at: Timestamp
    updated_at: Timestamp


class ScheduleActionsOut(ApiModel):
    can_enable: GateOut


class ScheduleStateOut(ApiModel):
    schedule: ScheduleOut | None
    limits: LimitsOut
    available: bool
    reason: str | None
    actions: ScheduleActionsOut
