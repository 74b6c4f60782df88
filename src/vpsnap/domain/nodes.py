"""Hypervisor nodes as the control plane sees them: what their agents last published.

An agent (``vpsnap agent --node NAME``, or the embedded one in ``vpsnap serve``) heartbeats its
node and publishes the power state of its VPSes; the API serves that stored, observed state and
never asks a hypervisor itself. A node whose heartbeat is older than the offline threshold is
``offline``: its VPSes show ``powerState: unknown`` and no new work is accepted for it
(``node_unavailable``). A ``drained`` node is online but takes no new work (maintenance).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from vpsnap.domain.rules import Gate


class NodeState(StrEnum):
    ONLINE = "online"
    DRAINED = "drained"
    OFFLINE = "offline"


@dataclass(frozen=True, slots=True)
class Node:
    name: str
    version: str
    started_at: datetime
    last_seen_at: datetime
    drained: bool = False
    agent: str | None = None
    """Which process serves it (host:pid), for operators."""

    def state(self, now: datetime, offline_after: timedelta) -> NodeState:
        if now - self.last_seen_at > offline_after:
            return NodeState.OFFLINE
        return NodeState.DRAINED if self.drained else NodeState.ONLINE


@dataclass(frozen=True, slots=True)
class NodeStats:
    """What ``vpsnap admin node list`` shows beside the node itself."""

    vps_count: int
    queued_jobs: int
    oldest_queued_at: datetime | None


def node_gate(name: str, state: NodeState) -> Gate:
    """Whether new work may be queued for a VPS on node ``name`` (code ``node_unavailable``)."""
    if state is NodeState.OFFLINE:
        return Gate.refused(
            f"The host of this VPS ({name}) is not reachable right now; its agent has not "
            "reported recently. Try again later.",
            "node_unavailable",
        )
    if state is NodeState.DRAINED:
        return Gate.refused(
            f"The host of this VPS ({name}) is in maintenance and takes no new work. Try again "
            "later.",
            "node_unavailable",
        )
    return Gate(allowed=True)
