"""The free-space guard as the API applies it: from what the node's agent last published.

``vpsnap.domain.storage`` has the rule; ``vpsnap.jobs.data_stores`` publishes the observations
and re-checks with a real ``statvfs`` right before a job writes.
"""

from __future__ import annotations

from datetime import datetime

from vpsnap.domain.errors import InsufficientStorage
from vpsnap.domain.model import Vps
from vpsnap.domain.ports import Transaction
from vpsnap.domain.rules import Gate
from vpsnap.domain.storage import DataStore, SpaceGuard, space_refusal


async def published_stores(tx: Transaction, vps: Vps) -> list[DataStore]:
    """The data stores of the VPS's disks as last published (empty when nothing is known)."""
    usage = await tx.get_vps_storage(vps.id)
    if usage is None:
        return []
    wanted = set(usage.stores)
    return [s for s in await tx.list_data_stores(vps.node) if s.path in wanted]


async def check_space(
    tx: Transaction, vps: Vps, guard: SpaceGuard, now: datetime, *, include_memory_state: bool
) -> None:
    """Raise ``InsufficientStorage`` when a snapshot would leave the VPS's data store below the
    floor, by the agent's fresh observations (stale or missing ones refuse nothing)."""
    reason = space_refusal(
        vps,
        await published_stores(tx, vps),
        guard,
        include_memory_state=include_memory_state,
        now=now,
    )
    if reason is not None:
        raise InsufficientStorage(
            reason,
            extensions={
                "neededBytes": guard.needed(vps, include_memory_state=include_memory_state)
            },
        )


def space_gate(vps: Vps, stores: list[DataStore], guard: SpaceGuard, now: datetime) -> Gate:
    """``canCreate``'s space part, for the smallest snapshot (disks only): a snapshot with RAM
    state needs more and may still be refused when it is asked for."""
    reason = space_refusal(vps, stores, guard, include_memory_state=False, now=now)
    if reason is None:
        return Gate(allowed=True)
    return Gate.refused(reason, "insufficient_storage")
