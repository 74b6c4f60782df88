"""Read models of the web panel's pages (issue 11): what each page shows, read in one
transaction, so that the dashboard's routes never query and pages render fast.

The rules (slot accounting, gates) are the domain's, the same the API answers with.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from vpsnap.domain.auth import Principal
from vpsnap.domain.model import Account, Job, PowerState, Snapshot, Vps
from vpsnap.domain.ports import Store, VpsFilter
from vpsnap.domain.rules import Gate, SlotUsage, can_create, can_restore, slot_usage
from vpsnap.domain.schedules import Schedule
from vpsnap.services.access import owned_vps
from vpsnap.services.inventory import InventoryService

# The panel lists an account's VPSes on one page; past this many it asks to filter.
OVERVIEW_LIMIT = 500
RECENT_JOBS = 5


@dataclass(frozen=True, slots=True)
class VpsSummary:
    vps: Vps
    power_state: PowerState
    usage: SlotUsage
    schedule_enabled: bool


@dataclass(frozen=True, slots=True)
class Overview:
    account: Account | None
    items: list[VpsSummary]
    truncated: bool


@dataclass(frozen=True, slots=True)
class VpsPage:
    vps: Vps
    power_state: PowerState
    snapshots: list[Snapshot]
    usage: SlotUsage
    can_create: Gate
    can_restore: Gate
    schedule: Schedule | None
    recent_jobs: list[Job]
    """The newest jobs (active ones among them), newest first."""

    @property
    def active_jobs(self) -> list[Job]:
        return [j for j in self.recent_jobs if not j.status.is_terminal]

    def active_job_for(self, snapshot_name: str) -> Job | None:
        key = snapshot_name.lower()
        return next(
            (
                j
                for j in self.active_jobs
                if j.snapshot_name is not None and j.snapshot_name.lower() == key
            ),
            None,
        )


@dataclass(frozen=True, slots=True)
class JobHistory:
    vps: Vps
    jobs: list[Job]
    next_before: str | None


@dataclass(frozen=True, slots=True)
class PanelService:
    store: Store
    inventory: InventoryService

    async def overview(self, principal: Principal, name_contains: str | None = None) -> Overview:
        """The account's VPSes with slot usage and schedule state; ``name_contains`` filters
        by name, ignoring case."""
        needle = (name_contains or "").strip().lower()
        async with self.store.transaction(read_only=True) as tx:
            account = await tx.get_account(principal.account_id)
            found = await tx.list_vps(principal.account_id, VpsFilter(), None, OVERVIEW_LIMIT + 1)
            truncated = len(found) > OVERVIEW_LIMIT
            chosen = [v for v in found[:OVERVIEW_LIMIT] if needle in v.name.lower()]
            rows = []
            for vps in chosen:
                snapshots = await tx.list_snapshots(vps.id)
                schedule = await tx.get_schedule(vps.id)
                rows.append((vps, slot_usage(vps, snapshots), bool(schedule and schedule.enabled)))
        states = await asyncio.gather(*(self.inventory.power_state(v) for v, _, _ in rows))
        items = [
            VpsSummary(vps, state, usage, enabled)
            for (vps, usage, enabled), state in zip(rows, states, strict=True)
        ]
        return Overview(account, items, truncated)

    async def vps_page(self, principal: Principal, vps_id: str) -> VpsPage:
        """Everything the VPS page shows; ``VpsNotFound`` for another account's VPS."""
        async with self.store.transaction(read_only=True) as tx:
            vps = await owned_vps(tx, principal, vps_id)
            snapshots = await tx.list_snapshots(vps.id)
            schedule = await tx.get_schedule(vps.id)
            jobs = await tx.list_jobs(
                vps.account_id, vps_id=vps.id, status=None, before_id=None, limit=RECENT_JOBS
            )
        usage = slot_usage(vps, snapshots)
        return VpsPage(
            vps=vps,
            power_state=await self.inventory.power_state(vps),
            snapshots=snapshots,
            usage=usage,
            can_create=can_create(vps, usage, principal),
            can_restore=can_restore(vps, snapshots, principal),
            schedule=schedule,
            recent_jobs=jobs,
        )

    async def vps(self, principal: Principal, vps_id: str) -> Vps:
        async with self.store.transaction(read_only=True) as tx:
            return await owned_vps(tx, principal, vps_id)

    async def snapshot(self, principal: Principal, vps_id: str, name: str) -> Snapshot | None:
        async with self.store.transaction(read_only=True) as tx:
            vps = await owned_vps(tx, principal, vps_id)
            return await tx.get_snapshot(vps.id, name)

    async def recent_jobs(
        self, principal: Principal, vps_id: str, limit: int = RECENT_JOBS
    ) -> list[Job]:
        """The VPS's newest jobs, newest first (what the live updates watch)."""
        async with self.store.transaction(read_only=True) as tx:
            vps = await owned_vps(tx, principal, vps_id)
            return await tx.list_jobs(
                vps.account_id, vps_id=vps.id, status=None, before_id=None, limit=limit
            )

    async def job_history(
        self, principal: Principal, vps_id: str, before: str | None, limit: int = 50
    ) -> JobHistory:
        """One page of the VPS's jobs, newest first; ``next_before`` continues it."""
        async with self.store.transaction(read_only=True) as tx:
            vps = await owned_vps(tx, principal, vps_id)
            jobs = await tx.list_jobs(
                vps.account_id, vps_id=vps.id, status=None, before_id=before, limit=limit + 1
            )
        page = jobs[:limit]
        return JobHistory(vps, page, page[-1].id if len(jobs) > limit else None)
