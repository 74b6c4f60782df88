"""Request and response bodies of the HTTP API, one class per direction (never ORM rows)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, PlainSerializer
from pydantic.alias_generators import to_camel

from vpsnap.domain.clock import format_timestamp
from vpsnap.domain.model import JobStatus
from vpsnap.domain.rules import (
    DESCRIPTION_MAX_LENGTH,
    DESCRIPTION_PATTERN,
    SNAPSHOT_NAME_PATTERN,
)

Timestamp = Annotated[datetime, PlainSerializer(format_timestamp, return_type=str)]


class ApiModel(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True)


class RequestModel(ApiModel):
    """The base of every request body.

    A typo must never silently do something else (contract section 1): unknown fields are
    refused (``extra="forbid"``), and values are parsed strictly: each field takes the JSON type
    it documents and nothing else (``"yes"``, ``"true"`` or ``1`` are not booleans, ``"3"`` or
    ``3.0`` not integers, ``6`` is not a string). The one widening JSON itself makes is kept:
    an integer is a valid number for a float field (``"intervalHours": 6``). No field needs lax
    parsing; one that ever does says so with ``Field(strict=False)`` and a comment.
    """

    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=False, extra="forbid", strict=True
    )


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
    actions: SnapshotItemActionsOut | None = None
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


class SnapshotItemActionsOut(ApiModel):
    """**(vpsnap)** What can be done with this snapshot now (issue 9)."""

    can_restore: GateOut = Field(
        description="Whether this snapshot can be restored now: refused when its RAM state "
        "does not fit the running VM, or the running VM cannot be stopped and started again "
        "for a disk-only restore."
    )


class SnapshotActionsOut(ApiModel):
    can_create: GateOut
    can_restore: GateOut
    can_create_with_memory: GateOut = Field(
        description="**(vpsnap)** Whether a snapshot with `includeMemoryState: true` can be "
        "taken now: refused when the running VM has writable devices the VPS's disks do not "
        "cover. Allowed when the VM is stopped (the snapshot then has no RAM state) or did "
        "not answer in time (the job checks)."
    )


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
        default=None,
        max_length=DESCRIPTION_MAX_LENGTH,
        pattern=DESCRIPTION_PATTERN,
        description="Up to 255 characters; tab and newline are the only control characters.",
        examples=["Before package upgrade"],
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


class JobCreatorOut(ApiModel):
    kind: str = Field(examples=["api_key"])
    id: str = Field(examples=["key_01hxa3b4c5d6e7f8g9h0j1k2m3"])


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
    request_id: str | None = Field(
        default=None, description="The request that queued the job (its `X-Request-Id`)."
    )
    created_by: JobCreatorOut | None = Field(
        default=None, description="Who asked for it: an API key, a user, the scheduler."
    )


class JobPageOut(ApiModel):
    data: list[JobOut]
    has_more: bool
    next_cursor: str | None


class VersionOut(ApiModel):
    name: str = Field(description="Always `vpsnap`.")
    version: str = Field(description="The server's version (the Python package's).")
    api_versions: list[str] = Field(description="API versions served under `/api/`.")


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
