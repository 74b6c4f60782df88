"""What the API answers, as typed, immutable objects (jobs and operations are in ``jobs``).

Fields are the API's, in snake_case; timestamps are aware ``datetime``s in UTC. Every object
keeps the JSON it was read from in ``raw`` (what ``--output json`` prints), so fields added to
the API later are never lost.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

Raw = Mapping[str, Any]


def timestamp(value: str) -> datetime:
    return datetime.fromisoformat(value)


def optional_timestamp(value: str | None) -> datetime | None:
    return None if value is None else timestamp(value)


@dataclass(frozen=True, slots=True)
class OperatingSystem:
    display_name: str
    family: str
    version: str | None
    variant: str | None


@dataclass(frozen=True, slots=True)
class Resources:
    cpu_cores: int
    memory_gb: float
    storage_gb: float


@dataclass(frozen=True, slots=True)
class Billing:
    amount: str
    currency_code: str
    billing_cycle: str
    is_payg: bool


@dataclass(frozen=True, slots=True)
class Vps:
    id: str
    name: str
    primary_ip: str | None
    service_status: str
    power_state: str
    operating_system: OperatingSystem | None
    resources: Resources
    billing: Billing | None
    node: str
    created_at: datetime
    raw: Raw = field(repr=False, compare=False)

    @classmethod
    def parse(cls, raw: Raw) -> Vps:
        os_, billing, res = raw["operatingSystem"], raw["billing"], raw["resources"]
        return cls(
            id=raw["id"],
            name=raw["name"],
            primary_ip=raw["primaryIp"],
            service_status=raw["serviceStatus"],
            power_state=raw["powerState"],
            operating_system=None
            if os_ is None
            else OperatingSystem(os_["displayName"], os_["family"], os_["version"], os_["variant"]),
            resources=Resources(res["cpuCores"], res["memoryGb"], res["storageGb"]),
            billing=None
            if billing is None
            else Billing(
                billing["amount"],
                billing["currencyCode"],
                billing["billingCycle"],
                billing["isPayg"],
            ),
            node=raw["node"],
            created_at=timestamp(raw["createdAt"]),
            raw=raw,
        )


@dataclass(frozen=True, slots=True)
class Snapshot:
    """A restore point of a VPS, named by ``name`` (unique per VPS, ignoring case).

    ``job_id`` is set only on the snapshot ``create_safely`` returns: the job that made it.
    """

    name: str
    display_id: str
    description: str | None
    created_at: datetime
    expires_at: datetime
    includes_memory_state: bool
    parent_name: str | None
    status: str  # creating | available | restoring | deleting | failed
    origin: str  # manual | scheduled
    consistency: str  # crash | filesystem | memory
    raw: Raw = field(repr=False, compare=False)
    job_id: str | None = None
    can_restore: Gate | None = None
    """Whether this snapshot can be restored now (None: the server does not say)."""
    consistency_reason: str | None = None
    """Why ``consistency`` is not better (e.g. no guest agent answered); None when it is
    ``memory`` or ``filesystem``, or the server predates the field."""

    @classmethod
    def parse(cls, raw: Raw) -> Snapshot:
        actions = raw.get("actions") or {}
        return cls(
            name=raw["name"],
            display_id=raw["displayId"],
            description=raw["description"],
            created_at=timestamp(raw["createdAt"]),
            expires_at=timestamp(raw["expiresAt"]),
            includes_memory_state=raw["includesMemoryState"],
            parent_name=raw["parentName"],
            status=raw["status"],
            origin=raw["origin"],
            consistency=raw["consistency"],
            raw=raw,
            can_restore=Gate.parse(actions["canRestore"]) if "canRestore" in actions else None,
            consistency_reason=raw.get("consistencyReason"),
        )


@dataclass(frozen=True, slots=True)
class Limits:
    total_snapshots: int
    used_snapshots: int
    remaining_snapshots: int


@dataclass(frozen=True, slots=True)
class Gate:
    """Whether an action is allowed now; ``code`` is the error it would get when not."""

    allowed: bool
    reason: str | None
    code: str | None

    @classmethod
    def parse(cls, raw: Raw) -> Gate:
        return cls(raw["allowed"], raw["reason"], raw["code"])


@dataclass(frozen=True, slots=True)
class SnapshotActions:
    can_create: Gate
    can_restore: Gate
    can_create_with_memory: Gate | None = None
    """A snapshot with RAM state (None: the server does not say)."""


@dataclass(frozen=True, slots=True)
class SnapshotList:
    """A VPS's snapshots (oldest first), its slot limits and the gates of create/restore."""

    vps_id: str
    snapshots: tuple[Snapshot, ...]
    limits: Limits
    available: bool
    reason: str | None
    actions: SnapshotActions
    raw: Raw = field(repr=False, compare=False)

    @classmethod
    def parse(cls, vps_id: str, raw: Raw) -> SnapshotList:
        limits, actions = raw["limits"], raw["actions"]
        return cls(
            vps_id=vps_id,
            snapshots=tuple(Snapshot.parse(s) for s in raw["data"]),
            limits=Limits(
                limits["totalSnapshots"], limits["usedSnapshots"], limits["remainingSnapshots"]
            ),
            available=raw["available"],
            reason=raw["reason"],
            actions=SnapshotActions(
                Gate.parse(actions["canCreate"]),
                Gate.parse(actions["canRestore"]),
                Gate.parse(actions["canCreateWithMemory"])
                if "canCreateWithMemory" in actions
                else None,
            ),
            raw=raw,
        )

    def find(self, name: str) -> Snapshot | None:
        """The snapshot of that name, compared ignoring case as the server does."""
        folded = name.casefold()
        return next((s for s in self.snapshots if s.name.casefold() == folded), None)

    def oldest_available(self) -> Snapshot | None:
        return next((s for s in self.snapshots if s.status == "available"), None)


@dataclass(frozen=True, slots=True)
class Price:
    amount: str  # exact decimal as a string ("1.00"): money is never a float
    currency_code: str
    billing_cycle: str

    @classmethod
    def parse(cls, raw: Raw) -> Price:
        return cls(raw["amount"], raw["currencyCode"], raw["billingCycle"])


@dataclass(frozen=True, slots=True)
class QuantityOption:
    """Something the operator sells by quantity (``key == "snapshotSlots"``)."""

    key: str
    label: str
    min: int
    max: int
    step: int
    current_value: int
    included_value: int
    unit_price: Price

    def next_value_above(self, value: int) -> int | None:
        """The smallest count this option sells that is above ``value`` (None: none is)."""
        if value < self.min:
            return self.min
        steps = (value - self.min) // self.step + 1
        candidate = self.min + steps * self.step
        return candidate if candidate <= self.max else None


@dataclass(frozen=True, slots=True)
class ProductPlan:
    """One of the operator's plans (informational: changing plans is an operator action)."""

    id: str
    name: str
    price: Price
    snapshot_slots: int
    is_current: bool


@dataclass(frozen=True, slots=True)
class UpgradeOptions:
    vps_id: str
    current_snapshot_slots: int
    included_snapshot_slots: int
    configurable_options: tuple[QuantityOption, ...]
    available_plans: tuple[ProductPlan, ...]
    raw: Raw = field(repr=False, compare=False)

    @classmethod
    def parse(cls, raw: Raw) -> UpgradeOptions:
        product = raw["currentProduct"]
        return cls(
            vps_id=raw["vpsId"],
            current_snapshot_slots=product["snapshotSlots"],
            included_snapshot_slots=product["includedSnapshotSlots"],
            configurable_options=tuple(
                QuantityOption(
                    key=o["key"],
                    label=o["label"],
                    min=o["min"],
                    max=o["max"],
                    step=o["step"],
                    current_value=o["currentValue"],
                    included_value=o["includedValue"],
                    unit_price=Price.parse(o["unitPrice"]),
                )
                for o in raw["configurableOptions"]
            ),
            available_plans=tuple(
                ProductPlan(
                    p["id"], p["name"], Price.parse(p["price"]), p["snapshotSlots"], p["isCurrent"]
                )
                for p in raw["availablePlans"]
            ),
            raw=raw,
        )

    @property
    def snapshot_slots(self) -> QuantityOption | None:
        """The snapshot slot option, or None when the operator sells no slots."""
        return next((o for o in self.configurable_options if o.key == "snapshotSlots"), None)


@dataclass(frozen=True, slots=True)
class PriceChange:
    amount: str  # charged now
    recurring_amount: str  # per cycle after the change
    additional_recurring_amount: str  # change per cycle (negative when shrinking)
    currency_code: str
    billing_cycle: str


@dataclass(frozen=True, slots=True)
class ConfigResult:
    """The answer to a capacity change: a preview (``dry_run``) or a commit."""

    dry_run: bool
    snapshot_slots: int
    price_change: PriceChange
    can_commit: Gate
    raw: Raw = field(repr=False, compare=False)

    @classmethod
    def parse(cls, raw: Raw) -> ConfigResult:
        change = raw["priceChange"]
        return cls(
            dry_run=raw["dryRun"],
            snapshot_slots=raw["resources"]["snapshotSlots"],
            price_change=PriceChange(
                change["amount"],
                change["recurringAmount"],
                change["additionalRecurringAmount"],
                change["currencyCode"],
                change["billingCycle"],
            ),
            can_commit=Gate.parse(raw["actions"]["canCommit"]),
            raw=raw,
        )


def parse_vps_page(raw: Raw) -> tuple[Sequence[Vps], str | None]:
    """One page of ``GET /api/v2/vps``: its VPSes and the cursor of the next page."""
    next_cursor = raw["nextCursor"] if raw["hasMore"] else None
    return [Vps.parse(v) for v in raw["data"]], next_cursor


@dataclass(frozen=True, slots=True)
class Schedule:
    """A VPS's snapshot schedule: a snapshot ``auto-YYYYMMDD-HHMM`` every ``interval_hours``."""

    enabled: bool
    interval_hours: int
    next_run_at: datetime | None
    last_run_at: datetime | None
    last_run_status: str | None  # "ok", "failed: …", "skipped: …"; None before the first run
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class ScheduleState:
    """``GET …/snapshot-schedules``: the schedule (None: none), slots, and whether one can
    be enabled (``can_enable``)."""

    vps_id: str
    schedule: Schedule | None
    limits: Limits
    available: bool
    reason: str | None
    can_enable: Gate
    raw: Raw = field(repr=False, compare=False)

    @classmethod
    def parse(cls, vps_id: str, raw: Raw) -> ScheduleState:
        item, limits = raw["schedule"], raw["limits"]
        return cls(
            vps_id=vps_id,
            schedule=None
            if item is None
            else Schedule(
                enabled=item["enabled"],
                interval_hours=item["intervalHours"],
                next_run_at=optional_timestamp(item["nextRunAt"]),
                last_run_at=optional_timestamp(item["lastRunAt"]),
                last_run_status=item["lastRunStatus"],
                created_at=timestamp(item["createdAt"]),
                updated_at=timestamp(item["updatedAt"]),
            ),
            limits=Limits(
                limits["totalSnapshots"], limits["usedSnapshots"], limits["remainingSnapshots"]
            ),
            available=raw["available"],
            reason=raw["reason"],
            can_enable=Gate.parse(raw["actions"]["canEnable"]),
            raw=raw,
        )


@dataclass(frozen=True, slots=True)
class ServerVersion:
    """``GET /api/version``."""

    name: str
    version: str
    api_versions: tuple[str, ...]
    raw: Raw = field(repr=False, compare=False)

    @classmethod
    def parse(cls, raw: Raw) -> ServerVersion:
        return cls(raw["name"], raw["version"], tuple(raw["apiVersions"]), raw)


@dataclass(frozen=True, slots=True)
class AuditActor:
    """Who acted: ``kind`` is ``api_key``, ``user``, ``admin``, ``scheduler`` or
    ``reconciler``; ``id`` is stable within the kind (a key id, a user id, an OS user)."""

    kind: str
    id: str
    label: str | None


@dataclass(frozen=True, slots=True)
class AuditTarget:
    """What was acted on: ``type`` (``snapshot``, ``vps``, ``key``, ``webhook``, …) and id."""

    type: str
    id: str


@dataclass(frozen=True, slots=True)
class AuditEvent:
    """One entry of the account's audit trail (``GET /api/v2/audit-events``).

    ``outcome`` is ``succeeded`` or ``failed`` (then ``problem_code`` says why); ``client_ip``
    is the caller's address as the server trusts it (forwarded headers only from its proxies).
    """

    id: str
    occurred_at: datetime
    actor: AuditActor
    action: str
    outcome: str
    target: AuditTarget | None
    vps_id: str | None
    request_id: str | None
    client_ip: str | None
    problem_code: str | None
    details: Mapping[str, Any]
    raw: Raw = field(repr=False, compare=False)

    @classmethod
    def parse(cls, raw: Raw) -> AuditEvent:
        actor, target = raw["actor"], raw["target"]
        return cls(
            id=raw["id"],
            occurred_at=timestamp(raw["occurredAt"]),
            actor=AuditActor(actor["kind"], actor["id"], actor["label"]),
            action=raw["action"],
            outcome=raw["outcome"],
            target=None if target is None else AuditTarget(target["type"], target["id"]),
            vps_id=raw["vpsId"],
            request_id=raw["requestId"],
            client_ip=raw["clientIp"],
            problem_code=raw["problemCode"],
            details=raw["details"],
            raw=raw,
        )


@dataclass(frozen=True, slots=True)
class Webhook:
    """A webhook endpoint of the account. ``enabled`` turns false when vpsnap gives up on it
    after repeated failures (``disabled_at``, ``disabled_reason``); its secret is never shown
    again after ``create``."""

    id: str
    url: str
    description: str | None
    event_types: tuple[str, ...]
    enabled: bool
    created_at: datetime
    last_success_at: datetime | None
    last_failure_at: datetime | None
    disabled_at: datetime | None
    disabled_reason: str | None
    raw: Raw = field(repr=False, compare=False)

    @classmethod
    def parse(cls, raw: Raw) -> Webhook:
        return cls(**_webhook_fields(raw))


def _webhook_fields(raw: Raw) -> dict[str, Any]:
    return {
        "id": raw["id"],
        "url": raw["url"],
        "description": raw["description"],
        "event_types": tuple(raw["eventTypes"]),
        "enabled": raw["enabled"],
        "created_at": timestamp(raw["createdAt"]),
        "last_success_at": optional_timestamp(raw["lastSuccessAt"]),
        "last_failure_at": optional_timestamp(raw["lastFailureAt"]),
        "disabled_at": optional_timestamp(raw["disabledAt"]),
        "disabled_reason": raw["disabledReason"],
        "raw": raw,
    }


@dataclass(frozen=True, slots=True)
class CreatedWebhook(Webhook):
    """The answer to ``webhooks.create``: the endpoint and its signing secret (Standard
    Webhooks, ``whsec_…``), which the server shows this once. Kept out of ``repr``."""

    secret: str = field(repr=False)

    @classmethod
    def parse(cls, raw: Raw) -> CreatedWebhook:
        return cls(**_webhook_fields(raw), secret=raw["secret"])


@dataclass(frozen=True, slots=True)
class WebhookTest:
    """A queued ``webhook.test`` event: ``message_id`` is the ``webhook-id`` header it is
    sent with, and names its attempts in ``deliveries``."""

    message_id: str
    event_type: str
    raw: Raw = field(repr=False, compare=False)

    @classmethod
    def parse(cls, raw: Raw) -> WebhookTest:
        return cls(raw["messageId"], raw["eventType"], raw)


@dataclass(frozen=True, slots=True)
class WebhookDelivery:
    """One delivery attempt: ``outcome`` is ``delivered`` or ``failed``; ``status_code`` is
    the receiver's answer (None when none came: then ``error`` says why); ``attempt`` counts
    from 1 for each message; ``duration_ms`` in milliseconds."""

    id: str
    message_id: str
    event_type: str
    attempt: int
    attempted_at: datetime
    outcome: str
    status_code: int | None
    error: str | None
    duration_ms: int
    raw: Raw = field(repr=False, compare=False)

    @classmethod
    def parse(cls, raw: Raw) -> WebhookDelivery:
        return cls(
            id=raw["id"],
            message_id=raw["messageId"],
            event_type=raw["eventType"],
            attempt=raw["attempt"],
            attempted_at=timestamp(raw["attemptedAt"]),
            outcome=raw["outcome"],
            status_code=raw["statusCode"],
            error=raw["error"],
            duration_ms=raw["durationMs"],
            raw=raw,
        )
