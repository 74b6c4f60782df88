"""Request and response bodies of the HTTP API, one class per direction (never ORM rows)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, PlainSerializer
from pydantic.alias_generators import to_camel

from vpsnap.domain.clock import format_timestamp
from vpsnap.domain.model import JobStatus
from vpsnap.domain.rules import DESCRIPTION_MAX_LENGTH, SNAPSHOT_NAME_PATTERN

Timestamp = Annotated[datetime, PlainSerializer(format_timestamp, return_type=str)]


class ApiModel(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True)


class RequestModel(ApiModel):
    # A typo in a field name must never silently do something else.
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=False, extra="forbid")


# -- inventory ----------------------------------------------------------------------------------


class OperatingSystemOut(ApiModel):
    display_name: str
    family: str
    version: str | None
    variant: str | None


class ResourcesOut(ApiModel):
    cpu_cores: int
    memory_gb: float
    storage_gb: float


class BillingOut(ApiModel):
    amount: str
    currency_code: str
    billing_cycle: str
    is_payg: bool


class VpsOut(ApiModel):
    id: str = Field(examples=["vps_01hxa3b4c5d6e7f8g9h0j1k2m3"])
    name: str
    primary_ip: str | None
    service_status: str
    power_state: str
    operating_system: OperatingSystemOut | None
    resources: ResourcesOut
    billing: BillingOut | None
    node: str
    created_at: Timestamp


class VpsPageOut(ApiModel):
    data: list[VpsOut]
    has_more: bool
    next_cursor: str | None


# -- snapshots ----------------------------------------------------------------------------------


class SnapshotOut(ApiModel):
    display_id: str
    name: str
    description: str | None
    created_at: Timestamp
    expires_at: Timestamp
    includes_memory_state: bool
    parent_name: str | None
    status: str
    origin: str
    consistency: str
    consistency_reason: str | None = Field(
        default=None,
        description="Why `consistency` is not better than it is (e.g. no guest agent answered); "
        "null for `memory` and `filesystem` snapshots",
    )


class LimitsOut(ApiModel):
    total_snapshots: int
    used_snapshots: int
    remaining_snapshots: int


class GateOut(ApiModel):
    allowed: bool
    reason: str | None
    code: str | None


class SnapshotActionsOut(ApiModel):
    can_create: GateOut
    can_restore: GateOut


class SnapshotListOut(ApiModel):
    data: list[SnapshotOut]
    limits: LimitsOut
    available: bool
    reason: str | None
    actions: SnapshotActionsOut


class CreateSnapshotIn(RequestModel):
    name: str = Field(
        pattern=SNAPSHOT_NAME_PATTERN,
        max_length=40,
        description="Letters, digits, `_` and `-`, up to 40 characters. Unique per VPS.",
        examples=["before-upgrade"],
    )
    description: str | None = Field(
        default=None, max_length=DESCRIPTION_MAX_LENGTH, examples=["Before package upgrade"]
    )
    include_memory_state: bool = Field(
        default=False, description="Also save RAM state (running VPS only)."
    )
    quiesce: bool = Field(
        default=True, description="Freeze guest filesystems when a guest agent answers."
    )


# -- operations and jobs ------------------------------------------------------------------------


class OperationBody(ApiModel):
    status: JobStatus
    job_id: str
    poll_url: str
    result: dict[str, Any] | None


class OperationOut(ApiModel):
    operation: OperationBody


class JobOut(ApiModel):
    job_id: str
    type: str
    status: JobStatus
    progress: int
    vps_id: str
    snapshot_name: str | None
    result: dict[str, Any] | None
    error: dict[str, Any] | None
    created_at: Timestamp
    started_at: Timestamp | None
    finished_at: Timestamp | None


class ProblemOut(ApiModel):
    """RFC 9457 problem details, as every error of this API answers."""

    type: str
    title: str
    status: int
    detail: str
    code: str
    instance: str
    request_id: str
    timestamp: str
    errors: list[dict[str, str]] | None = None
    extensions: dict[str, Any] | None = None


# -- power ------------------------------------------------------------------------------------


class PowerActionIn(RequestModel):
    """The optional body of start, shutdown, stop and reset: no fields."""


class RestartIn(RequestModel):
    force: bool = Field(
        default=False,
        description="Stop hard and start instead of a graceful shutdown and start.",
    )
