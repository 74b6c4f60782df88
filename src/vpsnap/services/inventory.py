"""Use cases on the VPS inventory: list (paginated, filtered) and show, with live power state."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import structlog

from vpsnap.domain.auth import Principal
from vpsnap.domain.errors import DomainError, FieldError, InvalidRequest
from vpsnap.domain.model import PowerState, Vps
from vpsnap.domain.ports import HypervisorDriver, Store, VpsFilter
from vpsnap.services.access import owned_vps
from vpsnap.services.pagination import decode_cursor, encode_cursor

_log = structlog.get_logger(__name__)

MAX_PAGE_SIZE = 100


@dataclass(frozen=True, slots=True)
class VpsView:
    vps: Vps
    power_state: PowerState


@dataclass(frozen=True, slots=True)
class VpsPage:
    items: list[VpsView]
    next_cursor: str | None

    @property
    def has_more(self) -> bool:
        return self.next_cursor is not None


@dataclass(frozen=True, slots=True)
class InventoryService:
    store: Store
    driver: HypervisorDriver

    async def _power_state(self, vps: Vps) -> PowerState:
        # The listing must not fail because one hypervisor is unreachable: that VPS shows
        # `unknown` and the rest are listed. *Any* failure: a hypervisor library's own error
        # (qemu.qmp asserting its state, issue 9 kind 11d) is no reason for a 5xx either.
        try:
            return await self.driver.power_state(vps)
        except Exception as exc:  # logged; `unknown` is the truthful answer
            _log.warning(
                "power_state_read_failed",
                vps_id=vps.id,
                error_type=type(exc).__name__,
                error=getattr(exc, "log_detail", None) or str(exc),
                exc_info=not isinstance(exc, DomainError),
            )
            return PowerState.UNKNOWN

    async def power_state(self, vps: Vps) -> PowerState:
        """The VPS's power state as its host sees it now; ``unknown`` when that fails."""
        return await self._power_state(vps)

    async def list(
        self, principal: Principal, flt: VpsFilter, cursor: str | None, limit: int
    ) -> VpsPage:
        if not 1 <= limit <= MAX_PAGE_SIZE:
            raise InvalidRequest(
                f"limit must be between 1 and {MAX_PAGE_SIZE}.",
                [FieldError("/query/limit", f"Between 1 and {MAX_PAGE_SIZE}.", "out_of_range")],
            )
        after = decode_cursor(cursor) if cursor is not None else None
        async with self.store.transaction(read_only=True) as tx:
            rows = await tx.list_vps(principal.account_id, flt, after, limit + 1)
        page = rows[:limit]
        states = await asyncio.gather(*(self._power_state(v) for v in page))
        next_cursor = encode_cursor(page[-1].id) if len(rows) > limit else None
        return VpsPage(
            items=[VpsView(v, s) for v, s in zip(page, states, strict=True)],
            next_cursor=next_cursor,
        )

    async def get(self, principal: Principal, vps_id: str) -> VpsView:
        async with self.store.transaction(read_only=True) as tx:
            vps = await owned_vps(tx, principal, vps_id)
        return VpsView(vps, await self._power_state(vps))
