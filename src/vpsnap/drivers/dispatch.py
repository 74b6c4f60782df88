"""The driver the runtime uses: each VPS goes to the backend its machine needs.

A VPS whose machine is a ``LibvirtDomain`` goes to the libvirt driver, every other VPS to the
QEMU driver. The libvirt driver is loaded on first use, so hosts without libvirt-python (an
optional extra) run everything else unchanged.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from vpsnap.domain.errors import HypervisorError
from vpsnap.domain.model import LibvirtDomain, PowerAction, PowerState, VmConfig, VmFacts, Vps
from vpsnap.domain.ports import (
    HypervisorDriver,
    PowerOutcome,
    RestoreOutcome,
    RestorePoint,
    SnapshotRequest,
    TakenSnapshot,
)

LIBVIRT_MISSING = (
    "VPS {name} is a libvirt domain, but libvirt-python is not installed: install vpsnap with "
    "its libvirt extra (pip install 'vpsnap[libvirt]'; it builds against the system's "
    "libvirt-dev with pkg-config and a C compiler). See docs/libvirt.md."
)


def libvirt_driver_factory(
    *, shutdown_timeout: float = 60.0, status_timeout: float = 1.0, call_timeout: float = 600.0
) -> Callable[[], HypervisorDriver]:
    """Builds the libvirt driver when first needed (importing libvirt-python only then)."""

    def load() -> HypervisorDriver:
        from vpsnap.drivers.libvirt import LibvirtDriver  # noqa: PLC0415 - optional extra

        return LibvirtDriver(
            shutdown_timeout=shutdown_timeout,
            status_timeout=status_timeout,
            call_timeout=call_timeout,
        )

    return load


class DispatchingDriver:
    """``HypervisorDriver`` that routes every call to the driver for the VPS's machine."""

    def __init__(
        self,
        qemu: HypervisorDriver,
        libvirt_factory: Callable[[], HypervisorDriver] | None = None,
    ) -> None:
        self._qemu = qemu
        self._libvirt_factory = libvirt_factory or libvirt_driver_factory()
        self._libvirt: HypervisorDriver | None = None

    async def probe(self) -> None:
        # The QEMU driver serves every host. libvirt is probed only once a VPS has used it:
        # a host without libvirt (or without libvirt VPSes) is not unready because of it.
        await self._qemu.probe()
        if self._libvirt is not None:
            await self._libvirt.probe()

    async def power_state(self, vps: Vps) -> PowerState:
        return await self._for(vps).power_state(vps)

    async def power_states(
        self, vpses: Sequence[Vps], *, concurrency: int = 8
    ) -> list[PowerState | Exception]:
        results: list[PowerState | Exception] = [PowerState.UNKNOWN] * len(vpses)
        # One batch per backend, the answers put back in the caller's order.
        groups: dict[int, tuple[HypervisorDriver, list[int]]] = {}
        for i, vps in enumerate(vpses):
            try:
                driver = self._for(vps)
            except HypervisorError as exc:  # no libvirt here: that VPS's answer
                results[i] = exc
                continue
            groups.setdefault(id(driver), (driver, []))[1].append(i)
        for driver, indices in groups.values():
            states = await driver.power_states([vpses[i] for i in indices], concurrency=concurrency)
            for i, state in zip(indices, states, strict=True):
                results[i] = state
        return results

    async def vm_facts(self, vps: Vps) -> VmFacts | None:
        return await self._for(vps).vm_facts(vps)

    async def list_restore_points(self, vps: Vps) -> list[RestorePoint]:
        return await self._for(vps).list_restore_points(vps)

    async def create_snapshot(self, vps: Vps, request: SnapshotRequest) -> TakenSnapshot:
        return await self._for(vps).create_snapshot(vps, request)

    async def delete_snapshot(self, vps: Vps, name: str) -> None:
        await self._for(vps).delete_snapshot(vps, name)

    async def restore_snapshot(
        self, vps: Vps, name: str, *, recorded: VmConfig | None = None
    ) -> RestoreOutcome:
        return await self._for(vps).restore_snapshot(vps, name, recorded=recorded)

    async def change_power(
        self, vps: Vps, action: PowerAction, *, force: bool = False
    ) -> PowerOutcome:
        return await self._for(vps).change_power(vps, action, force=force)

    def _for(self, vps: Vps) -> HypervisorDriver:
        if not isinstance(vps.machine, LibvirtDomain):
            return self._qemu
        if self._libvirt is None:
            # Synchronous, on the event loop's thread: no two callers can interleave here.
            try:
                self._libvirt = self._libvirt_factory()
            except ImportError as exc:
                if exc.name != "libvirt":
                    raise
                raise HypervisorError(
                    f"VPS {vps.name} is a libvirt domain, but this host has no libvirt support "
                    "installed; the provider must add it.",
                    log_detail=LIBVIRT_MISSING.format(name=vps.name),
                ) from exc
        return self._libvirt


if TYPE_CHECKING:
    # mypy proves the class satisfies the port; nothing runs.
    def _implements_port(driver: DispatchingDriver) -> HypervisorDriver:
        return driver
