"""DispatchingDriver: each VPS reaches the driver of its machine; libvirt is optional."""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Sequence
from typing import Any

import pytest

from vpsnap.domain.errors import HypervisorError
from vpsnap.domain.model import LibvirtDomain, PowerState, QmpAttachment, Vps
from vpsnap.domain.ports import HypervisorDriver, SnapshotRequest
from vpsnap.drivers.dispatch import DispatchingDriver, libvirt_driver_factory
from vpsnap.drivers.fake import FakeDriver

from .support import make_vps

DISK_VPS = make_vps(("/fake/disk0.qcow2",), "vps-disk")
QMP_VPS = dataclasses.replace(make_vps(("/fake/q.qcow2",), "vps-qmp"), machine=QmpAttachment("/q"))
LIBVIRT_VPS = dataclasses.replace(
    make_vps(("/fake/l.qcow2",), "vps-lv"), machine=LibvirtDomain("qemu:///system", "web")
)


async def test_libvirt_domains_go_to_libvirt_and_everything_else_to_qemu() -> None:
    qemu, libvirt = FakeDriver(), FakeDriver()
    built: list[HypervisorDriver] = []

    def factory() -> HypervisorDriver:
        built.append(libvirt)
        return libvirt

    driver = DispatchingDriver(qemu, factory)
    await driver.probe()
    assert built == []  # libvirt is loaded only once a VPS needs it

    for vps in (DISK_VPS, QMP_VPS, LIBVIRT_VPS):
        await driver.create_snapshot(vps, SnapshotRequest(name="s"))
        await driver.power_state(vps)
    await driver.restore_snapshot(LIBVIRT_VPS, "s")

    assert qemu.calls == [("probe", ""), ("create", "vps-disk"), ("create", "vps-qmp")]
    assert libvirt.calls == [("create", "vps-lv"), ("restore", "vps-lv")]
    assert len(built) == 1  # one libvirt driver, reused
    await driver.probe()
    assert qemu.calls[-1] == ("probe", "")
    assert libvirt.calls[-1] == ("probe", "")


async def test_without_libvirt_python_a_libvirt_vps_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # None in sys.modules makes `import libvirt` raise ImportError, as on a host without it.
    monkeypatch.setitem(sys.modules, "libvirt", None)
    monkeypatch.delitem(sys.modules, "vpsnap.drivers.libvirt", raising=False)
    qemu = FakeDriver()
    driver = DispatchingDriver(qemu, libvirt_driver_factory())

    with pytest.raises(HypervisorError) as caught:
        await driver.power_state(LIBVIRT_VPS)

    assert "no libvirt support installed" in caught.value.detail
    assert "vpsnap[libvirt]" in (caught.value.log_detail or "")  # what the operator installs
    assert caught.value.code == "hypervisor_unavailable"
    # Everything else still works.
    assert await driver.power_state(DISK_VPS) is PowerState.STOPPED


async def test_a_page_of_power_states_goes_to_each_backend_once_and_comes_back_in_order() -> None:
    qemu, libvirt = FakeDriver(), FakeDriver()
    qemu.set_power_state(QMP_VPS.id, PowerState.RUNNING)
    libvirt.set_power_state(LIBVIRT_VPS.id, PowerState.PAUSED)
    pages: list[tuple[str, list[str]]] = []

    def recording(name: str, backend: FakeDriver) -> FakeDriver:
        answer = backend.power_states

        async def power_states(vpses: Sequence[Vps], *, concurrency: int = 8) -> list[Any]:
            pages.append((name, [v.id for v in vpses]))
            return await answer(vpses, concurrency=concurrency)

        backend.power_states = power_states  # type: ignore[method-assign]
        return backend

    driver = DispatchingDriver(recording("qemu", qemu), lambda: recording("libvirt", libvirt))
    page = [LIBVIRT_VPS, DISK_VPS, QMP_VPS, LIBVIRT_VPS]

    assert await driver.power_states(page) == [
        PowerState.PAUSED,
        PowerState.STOPPED,
        PowerState.RUNNING,
        PowerState.PAUSED,
    ]
    assert pages == [
        ("libvirt", ["vps-lv", "vps-lv"]),
        ("qemu", ["vps-disk", "vps-qmp"]),
    ]


async def test_without_libvirt_python_only_the_libvirt_vpses_of_a_page_fail(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "libvirt", None)
    monkeypatch.delitem(sys.modules, "vpsnap.drivers.libvirt", raising=False)
    driver = DispatchingDriver(FakeDriver(), libvirt_driver_factory())

    states = await driver.power_states([DISK_VPS, LIBVIRT_VPS, QMP_VPS])

    assert states[0] is states[2] is PowerState.STOPPED
    assert isinstance(states[1], HypervisorError)
    assert "no libvirt support installed" in states[1].detail
