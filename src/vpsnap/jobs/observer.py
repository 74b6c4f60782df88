"""What only a node can see, published by its agent: the node's heartbeat, the power state of
each of its VPSes and, for running VMs, what their configuration means for RAM state
(``VmFacts``: the snapshot gates read it).

The API serves these stored observations and never asks a hypervisor itself, so a read never
waits on a host and works from a process on another machine. Power states are refreshed
periodically (and written by every job that changes them, in its final transaction); a
refresh never overwrites a newer observation (a job's), see ``record_power_state``.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import datetime

import structlog

from vpsnap.domain.clock import Clock
from vpsnap.domain.model import PowerState, VmFacts, Vps
from vpsnap.domain.nodes import Node
from vpsnap.domain.ports import HypervisorDriver, Store, VpsFilter
from vpsnap.pacing import between_pages

log = structlog.get_logger("vpsnap.observer")

VM_FACTS = "vmFacts"
"""Key of the VM facts a job observed, in its facts for ``succeed`` (not in its result)."""

_PAGE = 200


@dataclass
class NodeObserver:
    store: Store
    driver: HypervisorDriver
    clock: Clock
    node: str
    version: str
    agent: str
    concurrency: int = 8
    """Power-state reads at once (each is a QMP round trip or a libvirt call)."""
    started_at: datetime = field(init=False)

    def __post_init__(self) -> None:
        self.started_at = self.clock.now()

    async def heartbeat(self) -> None:
        now = self.clock.now()
        async with self.store.transaction() as tx:
            existing = await tx.get_node(self.node)
            await tx.heartbeat(
                Node(
                    name=self.node,
                    version=self.version,
                    started_at=self.started_at,
                    last_seen_at=now,
                    drained=existing.drained if existing is not None else False,
                    agent=self.agent,
                )
            )

    async def refresh_power_states(self) -> int:
        """Read every VPS of the node from its hypervisor and store the states that changed;
        returns how many changed.

        A page of VPSes is read with one ``power_states`` call (the checks that need no VM in
        one thread hop, issue 15), and written only when something on it changed: an
        unchanged fleet costs a read transaction per page and no write lock."""
        changed = 0
        after: str | None = None
        limit = asyncio.Semaphore(self.concurrency)
        while True:
            async with self.store.transaction(read_only=True) as tx:
                page = await tx.list_vps(None, VpsFilter(node=self.node), after, _PAGE)
            if not page:
                break
            observed_at = self.clock.now()
            states = await self.driver.power_states(page, concurrency=self.concurrency)
            seen: list[tuple[PowerState, VmFacts | None]] = []
            running: list[int] = []  # whose VM facts are read next
            for vps, state in zip(page, states, strict=True):
                if isinstance(state, Exception):
                    # One unreachable VM must not stop the others from being published.
                    log.info("power_state_unreadable", vps_id=vps.id, error=str(state))
                    seen.append((PowerState.UNKNOWN, vps.vm_facts))
                    continue
                if state in (PowerState.RUNNING, PowerState.PAUSED) and vps.machine is not None:
                    running.append(len(seen))
                seen.append((state, None))
            # A task per running VM, not one per VPS of the page.
            read = await asyncio.gather(*(self._facts(page[i], limit) for i in running))
            for i, read_facts in zip(running, read, strict=True):
                seen[i] = (seen[i][0], read_facts)
            updates = [
                (vps, state, facts)
                for vps, (state, facts) in zip(page, seen, strict=True)
                if facts != vps.vm_facts or vps.power_state is not state
            ]
            if updates:
                async with self.store.transaction() as tx:
                    for vps, state, facts in updates:
                        if facts != vps.vm_facts:
                            await tx.record_vm_facts(vps.id, facts)
                        if vps.power_state is state:
                            continue
                        if await tx.record_power_state(vps.id, state, observed_at):
                            changed += 1
                            log.info("power_state_observed", vps_id=vps.id, power_state=state.value)
            if len(page) < _PAGE:
                break
            after = page[-1].id
            await between_pages()  # paced; a stop ends the refresh here (vpsnap.pacing)
        return changed

    async def _facts(self, vps: Vps, limit: asyncio.Semaphore) -> VmFacts | None:
        """The running VM's facts; what was last seen when they cannot be read now."""
        async with limit:
            try:
                return await self.driver.vm_facts(vps)
            except Exception as exc:  # not known now: keep what was last seen
                log.info("vm_facts_unreadable", vps_id=vps.id, error=str(exc))
                return vps.vm_facts


async def observe_vm(driver: HypervisorDriver, vps: Vps, state: PowerState) -> VmFacts | None:
    """The VM facts to publish with a power state a job just led to (None: not running, or
    not known): a job that starts or restores a VM publishes them at once, so the gates do not
    wait for the next refresh."""
    if state not in (PowerState.RUNNING, PowerState.PAUSED) or vps.machine is None:
        return None
    try:
        return await driver.vm_facts(vps)
    except Exception as exc:  # not known now; the next refresh tries again
        log.info("vm_facts_unreadable", vps_id=vps.id, error=str(exc))
        return None
