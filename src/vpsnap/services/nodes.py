"""Node availability for the services: may new work be queued for a VPS's node?

In scale-out every node's agent heartbeats; a node not heard from within ``offline_after`` is
offline. In the embedded mode (``vpsnap serve``) the serving process *is* its node's agent,
so its own node (``local_node``) is online while it answers: it needs no heartbeat to say so
(it still publishes one, for ``admin node list``).
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from vpsnap.domain.clock import Clock
from vpsnap.domain.errors import NodeUnavailable, NotFound
from vpsnap.domain.model import PowerState, Vps
from vpsnap.domain.nodes import Node, NodeState, node_gate
from vpsnap.domain.ports import Store, Transaction
from vpsnap.domain.rules import Gate

# Clients told "node unavailable" should wait about this long (seconds) before trying again:
# an agent restart takes a few seconds, the offline threshold a bit longer.
RETRY_AFTER_SECONDS = 30


@dataclass(frozen=True, slots=True)
class NodeDirectory:
    clock: Clock
    offline_after: timedelta = timedelta(seconds=30)
    local_node: str | None = None
    """The node this process serves as embedded agent (always online), or None (scale-out)."""

    read_cache_seconds: float = 1.0
    """How old a node row ``displayed_state`` may use is (the list endpoints read it for
    every request; heartbeats come every few seconds, offline takes ``offline_after``)."""
    _read_cache: dict[str, tuple[float, Node | None]] = field(
        default_factory=dict, compare=False, repr=False
    )

    async def state(self, tx: Transaction, name: str) -> NodeState:
        return self._state_of(name, await tx.get_node(name))

    async def displayed_state(self, tx: Transaction, name: str) -> NodeState:
        """``state`` for what reads only show (power state, the listing's gates), from a node
        row read at most ``read_cache_seconds`` ago in this process: one statement less per
        list request. Decisions (``require_available``, failing unstartable jobs) use
        ``state``."""
        now = time.monotonic()
        cached = self._read_cache.get(name)
        if cached is None or now - cached[0] > self.read_cache_seconds:
            cached = (now, await tx.get_node(name))
            self._read_cache[name] = cached
        return self._state_of(name, cached[1])

    async def displayed_states(self, tx: Transaction, names: Iterable[str]) -> dict[str, NodeState]:
        return {name: await self.displayed_state(tx, name) for name in set(names)}

    def _state_of(self, name: str, node: Node | None) -> NodeState:
        if name == self.local_node:
            return NodeState.DRAINED if node is not None and node.drained else NodeState.ONLINE
        if node is None:
            return NodeState.OFFLINE
        return node.state(self.clock.now(), self.offline_after)

    async def states(self, tx: Transaction, names: Iterable[str]) -> dict[str, NodeState]:
        return {name: await self.state(tx, name) for name in set(names)}

    async def gate(self, tx: Transaction, vps: Vps) -> Gate:
        return node_gate(vps.node, await self.state(tx, vps.node))

    async def displayed_gate(self, tx: Transaction, vps: Vps) -> Gate:
        return node_gate(vps.node, await self.displayed_state(tx, vps.node))

    async def require_available(self, tx: Transaction, vps: Vps) -> None:
        """Raise ``NodeUnavailable`` unless new work may be queued for ``vps``'s node."""
        gate = await self.gate(tx, vps)
        if not gate.allowed:
            raise NodeUnavailable(
                gate.reason or "The host of this VPS is unavailable.",
                extensions={"node": vps.node, "retryAfter": RETRY_AFTER_SECONDS},
            )


def observed_power_state(vps: Vps, node_state: NodeState) -> PowerState:
    """What the API reports: the last observed state, ``unknown`` when the node is offline
    (its VPS may have changed since) or nothing was observed yet."""
    if node_state is NodeState.OFFLINE or vps.power_state is None:
        return PowerState.UNKNOWN
    return vps.power_state


@dataclass(frozen=True, slots=True)
class NodeReport:
    """One line of ``vpsnap admin node list``."""

    name: str
    state: NodeState
    version: str | None
    started_at: datetime | None
    last_seen_at: datetime | None
    vps_count: int
    queued_jobs: int
    oldest_queued_at: datetime | None


@dataclass(frozen=True, slots=True)
class NodeAdmin:
    """Operator use cases on nodes: list them, drain one for maintenance and undrain it."""

    store: Store
    directory: NodeDirectory

    async def report(self) -> list[NodeReport]:
        """Every node that has an agent or VPSes, by name."""
        async with self.store.transaction(read_only=True) as tx:
            known = {n.name: n for n in await tx.list_nodes()}
            stats = await tx.node_stats()
            states = await self.directory.states(tx, {*known, *stats})
        rows = []
        for name in sorted(states):
            node, counts = known.get(name), stats.get(name)
            rows.append(
                NodeReport(
                    name=name,
                    state=states[name],
                    version=node.version if node else None,
                    started_at=node.started_at if node else None,
                    last_seen_at=node.last_seen_at if node else None,
                    vps_count=counts.vps_count if counts else 0,
                    queued_jobs=counts.queued_jobs if counts else 0,
                    oldest_queued_at=counts.oldest_queued_at if counts else None,
                )
            )
        return rows

    async def set_drained(self, name: str, drained: bool) -> None:
        """Drain (no new work; jobs already queued still run) or undrain ``name``.

        Raises ``NotFound`` for a node that has never had an agent nor a VPS.
        """
        async with self.store.transaction() as tx:
            if await tx.set_node_drained(name, drained):
                return
            stats = await tx.node_stats()
            if name not in stats:
                raise NotFound(
                    f"No node named {name!r}: no agent has reported it, no VPS is on it."
                )
            # VPSes but no agent yet: remember the drain for when it comes.
            epoch = datetime(1970, 1, 1, tzinfo=UTC)
            await tx.heartbeat(
                Node(name=name, version="", started_at=epoch, last_seen_at=epoch, drained=drained)
            )
