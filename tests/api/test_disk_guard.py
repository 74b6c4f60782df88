"""The free-space guard on a real, small filesystem (a 48 MiB tmpfs): a snapshot that would
leave the VPS's data store below the floor is refused before anything is written, by the API
from what the node published (``canCreate`` says so first, then ``507 insufficient_storage``)
and by the job itself with a real ``statvfs`` when the published numbers are out of date."""

from __future__ import annotations

import asyncio
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import Api
from vpsnap.domain.model import LaunchSpec
from vpsnap.jobs.data_stores import mount_point, publish_data_stores
from vpsnap.services.accounts import NewVps

pytestmark = pytest.mark.qemu

MiB = 1024**2
FLOOR = 16 * MiB
MARGIN = 4 * MiB


@pytest.fixture
def api_overrides() -> dict[str, object]:
    return {"storage_free_floor": FLOOR, "storage_snapshot_margin": MARGIN}


@pytest.fixture
def api_worker() -> bool:
    return False


@pytest.fixture
def small_store(tmp_path: Path) -> Iterator[Path]:
    """A 48 MiB tmpfs mounted for this test (unmounted after it)."""
    mount = tmp_path / "store"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=48m,mode=0700", "tmpfs", str(mount)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        print(f"\n!! cannot mount a tmpfs here ({done.stderr.strip()}): needs root")
        pytest.skip("mounting a tmpfs needs root")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def free_bytes(path: Path) -> int:
    stats = os.statvfs(path)
    return stats.f_bavail * stats.f_frsize


def fill_until_free(store: Path, wanted_free: int) -> Path:
    """Write a filler file so that about ``wanted_free`` bytes stay free."""
    filler = store / "filler"
    size = free_bytes(store) - wanted_free
    with filler.open("wb") as handle:
        handle.write(b"\0" * size)  # tmpfs allocates what is written
    return filler


async def vps_on(api: Api, store: Path, name: str, *, memory_mib: int | None = None) -> str:
    disk = store / f"{name}.qcow2"
    await asyncio.to_thread(
        subprocess.run, ["qemu-img", "create", "-q", "-f", "qcow2", str(disk), "16M"], check=True
    )
    vps = await api.runtime.services.accounts.add_vps(
        NewVps(
            account_name="demo",
            name=name,
            disks=(str(disk),),
            snapshot_slots=3,
            machine=LaunchSpec(memory_mib=memory_mib, cpus=1) if memory_mib else None,
        )
    )
    return vps.id


async def publish(api: Api) -> None:
    await publish_data_stores(api.runtime.store, api.runtime.clock, api.runtime.settings.node)


def snapshots_on_disk(disk: Path) -> str:
    return subprocess.run(
        ["qemu-img", "snapshot", "-l", "-U", str(disk)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout


async def test_the_gate_and_the_create_refuse_when_the_store_would_run_low(
    api: Api, small_store: Path
) -> None:
    vps_id = await vps_on(api, small_store, "tight")
    disk = small_store / "tight.qcow2"
    before = disk.read_bytes()
    fill_until_free(small_store, FLOOR + MARGIN // 2)  # margin + floor no longer fit
    await publish(api)

    listing = (await api.client.get(f"/api/v2/vps/{vps_id}/snapshots", headers=api.auth())).json()
    gate = listing["actions"]["canCreate"]
    assert gate["allowed"] is False
    assert gate["code"] == "insufficient_storage"
    assert str(small_store) not in gate["reason"]  # tenants never see host paths

    response = await api.client.post(
        f"/api/v2/vps/{vps_id}/snapshots", json={"name": "wont-fit"}, headers=api.auth()
    )
    assert response.status_code == 507, response.text
    problem = response.json()
    assert problem["code"] == "insufficient_storage"
    assert problem["type"].endswith("/errors/insufficient_storage")
    assert problem["extensions"]["neededBytes"] == MARGIN
    assert str(small_store) not in response.text
    # Nothing was queued or written.
    assert (await api.client.get(f"/api/v2/vps/{vps_id}/snapshots", headers=api.auth())).json()[
        "data"
    ] == []
    assert not await api.runtime.worker().run_one()
    assert disk.read_bytes() == before
    page = await api.client.get("/errors/insufficient_storage")
    assert page.status_code == 200
    assert "507" in page.text


async def test_ram_state_counts_in_the_estimate(api: Api, small_store: Path) -> None:
    vps_id = await vps_on(api, small_store, "with-ram", memory_mib=24)
    fill_until_free(
        small_store, FLOOR + MARGIN + 8 * MiB
    )  # a disk snapshot fits, 24 MiB of RAM not
    await publish(api)
    listing = (await api.client.get(f"/api/v2/vps/{vps_id}/snapshots", headers=api.auth())).json()
    assert listing["actions"]["canCreate"]["allowed"] is True  # the smallest snapshot fits
    with_ram = await api.client.post(
        f"/api/v2/vps/{vps_id}/snapshots",
        json={"name": "with-ram", "includeMemoryState": True},
        headers=api.auth(),
    )
    assert with_ram.status_code == 507
    assert with_ram.json()["extensions"]["neededBytes"] == 24 * MiB + MARGIN
    disk_only = await api.client.post(
        f"/api/v2/vps/{vps_id}/snapshots", json={"name": "disk-only"}, headers=api.auth()
    )
    assert disk_only.status_code == 202


async def test_the_job_checks_again_before_it_writes(api: Api, small_store: Path) -> None:
    vps_id = await vps_on(api, small_store, "late")
    disk = small_store / "late.qcow2"
    await publish(api)  # plenty of room when the node last looked
    filler = fill_until_free(small_store, FLOOR + MARGIN // 2)
    response = await api.client.post(
        f"/api/v2/vps/{vps_id}/snapshots", json={"name": "too-late"}, headers=api.auth()
    )
    assert response.status_code == 202  # by the published numbers it fits
    before = disk.read_bytes()
    assert await api.runtime.worker().run_one()
    job = (await api.client.get(response.headers["location"], headers=api.auth())).json()
    assert job["status"] == "failed"
    assert job["error"]["code"] == "insufficient_storage"
    assert job["error"]["status"] == 507
    # Refused before qemu-img ran: the image is byte for byte what it was, the slot is free.
    assert disk.read_bytes() == before
    assert "too-late" not in snapshots_on_disk(disk)
    listing = (await api.client.get(f"/api/v2/vps/{vps_id}/snapshots", headers=api.auth())).json()
    assert listing["data"] == []
    async with api.runtime.store.transaction(read_only=True) as tx:
        assert await tx.open_write_intents(vps_id) == []

    # Space freed: the same snapshot is taken.
    filler.unlink()
    await publish(api)
    retry = await api.client.post(
        f"/api/v2/vps/{vps_id}/snapshots", json={"name": "too-late"}, headers=api.auth()
    )
    assert retry.status_code == 202
    assert await api.runtime.worker().run_one()
    assert "too-late" in snapshots_on_disk(disk)


async def test_metrics_show_the_store_and_the_vps_allocation(api: Api, small_store: Path) -> None:
    vps_id = await vps_on(api, small_store, "measured")
    await publish(api)
    text = (await api.client.get("/metrics")).text
    store = mount_point(str(small_store / "measured.qcow2"))
    assert store == str(small_store)
    labels = f'node="local",store="{store}"'
    total = _value(text, f"vpsnap_data_store_total_bytes{{{labels}}}")
    free = _value(text, f"vpsnap_data_store_free_bytes{{{labels}}}")
    assert total == 48 * MiB
    assert abs(free - free_bytes(small_store)) < MiB
    allocated = _value(text, f'vpsnap_vps_allocated_bytes{{node="local",vps="{vps_id}"}}')
    assert allocated == (small_store / "measured.qcow2").stat().st_blocks * 512
    assert allocated > 0


def _value(text: str, series: str) -> float:
    for line in text.splitlines():
        if line.startswith(series + " "):
            return float(line.split()[-1])
    raise AssertionError(f"{series} not in the metrics")
