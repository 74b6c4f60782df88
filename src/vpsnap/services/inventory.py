"""Use cases on the VPS inventory: list (paginated, filtered) and show, with the power state
the VPS's node last published (never a hypervisor call: a read must not wait on a host)."""

from __future__ import annotations

from dataclasses import dataclass

from vpsnap.domain.auth import Principal
from vpsnap.domain.errors import FieldError, InvalidRequest
from vpsnap.domain.model import PowerState, Vps
from vpsnap.domain.ports import Store, VpsFilter
from vpsnap.services.access import owned_vps
from vpsnap.services.nodes import NodeDirectory, observed_power_state
from vpsnap.services.pagination import decode_cursor, encode_cursor

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
    nodes: NodeDirectory

    async def power_state(self, vps: Vps) -> PowerState:
        """The power state the VPS's node last published (``unknown`` when its node is
        offline or nothing was observed yet); a read of the store, never of a hypervisor."""
        async with self.store.transaction(read_only=True) as tx:
            state = await self.nodes.displayed_state(tx, vps.node)
        return observed_power_state(vps, state)

    async def list(
        self, principal: Principal, flt: VpsFilter, cursor: str | None, limit: int
    ) -> VpsPage:
        if not 1 <= limit <= MAX_PAGE_SIZE:
            raise InvalidRequest(
                f"limit must be between 1 and {MAX_PAGE_SIZE}.",
                [FieldError("/query/limit", f"Between 1 and {MAX_PAGE_SIZE}.", "out_of_range")],
            )
        after = decode_cursor(cursor) if cursor is not None else None
        # Small: a page of at most MAX_PAGE_SIZE + 1 rows by an index (every filter has one).
        async with self.store.transaction(read_only=True, small=True) as tx:
            rows = await tx.list_vps(principal.account_id, flt, after, limit + 1)
            page = rows[:limit]
            states = await self.nodes.displayed_states(tx, (v.node for v in page))
        next_cursor = encode_cursor(page[-1].id) if len(rows) > limit else None
        return VpsPage(
            items=[VpsView(v, observed_power_state(v, states[v.node])) for v in page],
            next_cursor=next_cursor,
        )

    async def get(self, principal: Principal, vps_id: str) -> VpsView:
        async with self.store.transaction(read_only=True, small=True) as tx:
            vps = await owned_vps(tx, principal, vps_id)
            state = await self.nodes.displayed_state(tx, vps.node)
        return VpsView(vps, observed_power_state(vps, state))
