"""Capacity use cases: the upgrade options of a VPS, and changing its snapshot slots.

A commit runs in three steps, so that no database transaction (and no VPS row lock) is held
while the operator's billing system is called:

1. validate and price the change in a read-only transaction;
2. ask billing (``BillingGateway.slots_changing``); a refusal or failure ends here, nothing
   changed;
3. lock the VPS row, check again, and apply. If the VPS changed in between (its slot count was
   changed by someone else, snapshots now use more slots than requested, the service is no
   longer active) the commit fails with 409 and billing, which already accepted the change, is
   told it was aborted (same change id).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import structlog

from vpsnap.domain.audit import Actor, AuditAction, Target
from vpsnap.domain.auth import Principal
from vpsnap.domain.capacity import (
    SNAPSHOT_SLOTS_KEY,
    BillingGateway,
    CapacityConfig,
    Plan,
    PriceChange,
    SlotChange,
    SlotOption,
    commit_gate,
    price_change,
    slot_request_errors,
    slots_in_use_reason,
)
from vpsnap.domain.clock import Clock
from vpsnap.domain.errors import (
    BillingUnavailable,
    Conflict,
    DomainError,
    FieldError,
    InvalidRequest,
    SnapshotSlotsInUse,
    VpsNotReady,
)
from vpsnap.domain.ids import new_id
from vpsnap.domain.model import Snapshot, Vps
from vpsnap.domain.ports import Store
from vpsnap.domain.rules import ALLOWED, Gate
from vpsnap.events.audit import AuditTrail
from vpsnap.services.access import owned_vps

log = structlog.get_logger("vpsnap.capacity")


@dataclass(frozen=True, slots=True)
class UpgradeOptions:
    vps: Vps
    plan: Plan | None
    """The VPS's plan, when the configuration lists it."""
    included_slots: int
    option: SlotOption | None
    """None when the operator does not sell snapshot slots."""
    plans: tuple[Plan, ...]


@dataclass(frozen=True, slots=True)
class ConfigOutcome:
    dry_run: bool
    snapshot_slots: int
    price_change: PriceChange
    can_commit: Gate
    change_id: str | None = None
    """Set when a commit changed the slot count (the id billing was sent)."""


@dataclass(frozen=True, slots=True)
class CapacityService:
    store: Store
    clock: Clock
    config: CapacityConfig
    billing: BillingGateway

    async def upgrade_options(self, principal: Principal, vps_id: str) -> UpgradeOptions:
        async with self.store.transaction(read_only=True) as tx:
            vps = await owned_vps(tx, principal, vps_id)
        return UpgradeOptions(
            vps=vps,
            plan=self.config.plan(vps.plan),
            included_slots=self.config.included_slots(vps),
            option=self.config.snapshot_slots,
            plans=self.config.plans,
        )

    async def configure(
        self,
        principal: Principal,
        vps_id: str,
        resources: Mapping[str, object],
        *,
        dry_run: bool = False,
        billing_cycle: str | None = None,
        cancel_existing_invoice: bool = False,
    ) -> ConfigOutcome:
        """Preview (``dry_run``) or commit a new snapshot slot count (module docstring). A
        commit that changes the count is audited (``vps.config``), a refused one as failed."""
        if dry_run:
            return await self._configure(
                principal,
                vps_id,
                resources,
                dry_run=True,
                billing_cycle=billing_cycle,
                cancel_existing_invoice=cancel_existing_invoice,
            )
        async with AuditTrail(self.store, self.clock).refusals(
            Actor.of(principal),
            AuditAction.VPS_CONFIG,
            account_id=principal.account_id,
            target=Target("vps", vps_id),
            vps_id=vps_id,
        ):
            return await self._configure(
                principal,
                vps_id,
                resources,
                dry_run=False,
                billing_cycle=billing_cycle,
                cancel_existing_invoice=cancel_existing_invoice,
            )

    async def _configure(
        self,
        principal: Principal,
        vps_id: str,
        resources: Mapping[str, object],
        *,
        dry_run: bool,
        billing_cycle: str | None,
        cancel_existing_invoice: bool,
    ) -> ConfigOutcome:
        option, requested = self._validated(resources, dry_run, billing_cycle)

        async with self.store.transaction(read_only=True) as tx:
            vps = await owned_vps(tx, principal, vps_id)
            snapshots = await tx.list_snapshots(vps.id)
        price = price_change(
            option, vps.snapshot_slots, requested, included=self.config.included_slots(vps)
        )
        gate = commit_gate(vps, snapshots, requested)
        if dry_run:
            return ConfigOutcome(
                dry_run=True, snapshot_slots=requested, price_change=price, can_commit=gate
            )
        _raise_unless_allowed(gate, vps, snapshots, requested)
        if requested == vps.snapshot_slots:
            # Nothing changes, so there is nothing to bill: an idempotent repeat is free.
            return ConfigOutcome(
                dry_run=False, snapshot_slots=requested, price_change=price, can_commit=ALLOWED
            )

        change = SlotChange(
            id=new_id("chg"),
            vps_id=vps.id,
            account_id=vps.account_id,
            from_slots=vps.snapshot_slots,
            to_slots=requested,
            price_change=price,
            occurred_at=self.clock.now(),
            cancel_existing_invoice=cancel_existing_invoice,
        )
        await self.billing.slots_changing(change)
        try:
            await self._apply(principal, change)
        except Exception as error:
            await self._abort(change, error)
            raise
        log.info(
            "snapshot_slots_changed",
            vps_id=vps.id,
            change_id=change.id,
            from_slots=change.from_slots,
            to_slots=change.to_slots,
        )
        return ConfigOutcome(
            dry_run=False,
            snapshot_slots=requested,
            price_change=price,
            can_commit=ALLOWED,
            change_id=change.id,
        )

    def _validated(
        self, resources: Mapping[str, object], dry_run: bool, billing_cycle: str | None
    ) -> tuple[SlotOption, int]:
        option = self.config.snapshot_slots
        errors = slot_request_errors(option, resources)
        if billing_cycle is not None:
            errors.extend(_billing_cycle_errors(option, billing_cycle, dry_run))
        if errors:
            raise InvalidRequest("The request failed validation.", errors)
        requested = resources[SNAPSHOT_SLOTS_KEY]
        # slot_request_errors accepts only an int count and refuses when nothing is for sale.
        assert isinstance(requested, int)
        assert option is not None
        return option, requested

    async def _apply(self, principal: Principal, change: SlotChange) -> None:
        async with self.store.transaction() as tx:
            # The row lock orders this after any snapshot create that committed meanwhile, and
            # blocks new ones until the new count is in.
            vps = await owned_vps(tx, principal, change.vps_id, lock=True)
            if vps.snapshot_slots != change.from_slots:
                raise Conflict(
                    f"The snapshot slots of {vps.name} changed to {vps.snapshot_slots} while "
                    f"billing confirmed the change from {change.from_slots}; nothing was "
                    "applied and billing was told. Check the new count and retry.",
                    extensions={"changeId": change.id, "totalSnapshots": vps.snapshot_slots},
                )
            snapshots = await tx.list_snapshots(vps.id)
            gate = commit_gate(vps, snapshots, change.to_slots)
            _raise_unless_allowed(gate, vps, snapshots, change.to_slots, change_id=change.id)
            await tx.set_snapshot_slots(vps.id, change.to_slots)
            await AuditTrail(self.store, self.clock).record(
                tx,
                Actor.of(principal),
                AuditAction.VPS_CONFIG,
                account_id=principal.account_id,
                target=Target("vps", vps.id),
                vps_id=vps.id,
                details={
                    "snapshotSlots": {"from": change.from_slots, "to": change.to_slots},
                    "changeId": change.id,
                },
            )

    async def _abort(self, change: SlotChange, error: Exception) -> None:
        reason = error.code if isinstance(error, DomainError) else "internal_error"
        try:
            await self.billing.slots_change_aborted(change, reason)
        except BillingUnavailable:
            # Billing accepted a change that did not happen and cannot be told: the operator
            # has to reconcile it by hand, so say so loudly.
            log.exception(
                "billing_abort_not_delivered",
                vps_id=change.vps_id,
                change_id=change.id,
                reason=reason,
            )


def _billing_cycle_errors(
    option: SlotOption | None, billing_cycle: str, dry_run: bool
) -> list[FieldError]:
    if not dry_run:
        return [
            FieldError(
                "/billingCycle",
                "billingCycle is accepted only with dryRun: true; a commit is billed in the "
                "cycle the slots are sold in.",
                "not_allowed",
            )
        ]
    if option is not None and billing_cycle != option.unit_price.billing_cycle:
        cycle = option.unit_price.billing_cycle
        return [
            FieldError(
                "/billingCycle",
                f"Snapshot slots are billed {cycle} here: billingCycle must be {cycle!r} or "
                "left out.",
                "out_of_range",
            )
        ]
    return []


def _raise_unless_allowed(
    gate: Gate,
    vps: Vps,
    snapshots: list[Snapshot],
    requested: int,
    *,
    change_id: str | None = None,
) -> None:
    if gate.allowed:
        return
    extra = {"changeId": change_id} if change_id else {}
    if gate.code == "snapshot_slots_in_use":
        in_use = [s.name for s in snapshots if s.holds_slot]
        raise SnapshotSlotsInUse(
            slots_in_use_reason(vps, in_use, requested),
            extensions={
                "totalSnapshots": vps.snapshot_slots,
                "usedSnapshots": len(in_use),
                "requestedSnapshots": requested,
                "deleteAtLeast": len(in_use) - requested,
                "snapshotsInUse": in_use,
                **extra,
            },
        )
    raise VpsNotReady(gate.reason or "The VPS is not ready.", extensions=extra or None)
