"""One disk file belongs to one VPS, once (issue 9, kind 4), on SQLite and PostgreSQL.

Compared by real path *and* by (device, inode): the same file under another name (a symlink,
``..``, a hard link) is the same disk. Enforced by ``AccountService.add_vps`` (every command
that registers disks goes through it) and by a uniqueness constraint in the store.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tests.services.conftest import World
from vpsnap.domain.errors import Conflict, DiskAlreadyRegistered
from vpsnap.domain.ids import new_id
from vpsnap.domain.model import Resources, ServiceStatus, Vps
from vpsnap.services.accounts import NewVps


def disk(tmp_path: Path, name: str = "web.qcow2") -> str:
    path = tmp_path / name
    path.write_bytes(b"QFI\xfb")  # the service compares files; formats are the CLI's check
    return str(path)


async def count_vps(world: World) -> int:
    return len(await world.runtime.services.accounts.list_vps())


async def test_the_same_disk_twice_in_one_vps_is_refused(world: World, tmp_path: Path) -> None:
    """The reproduction: `vps add --disk X --disk X` was accepted."""
    x = disk(tmp_path)
    with pytest.raises(DiskAlreadyRegistered) as refused:
        await world.add_vps("web", disks=(x, x))
    assert x in refused.value.detail
    assert "twice" in refused.value.detail
    assert await count_vps(world) == 0


async def test_a_disk_of_another_vps_is_refused_naming_it(world: World, tmp_path: Path) -> None:
    """The reproduction: a disk of another VPS, even of another account, was accepted."""
    x = disk(tmp_path)
    first = await world.add_vps("web", disks=(x,))
    await world.runtime.services.accounts.create_account("mallory")
    for account in (world.account.name, "mallory"):
        with pytest.raises(DiskAlreadyRegistered) as refused:
            await world.add_vps(
                "copy", disks=(disk(tmp_path, "other.qcow2"), x), account_name=account
            )
        # The operator is told which VPS has it (this never reaches a tenant).
        assert first.id in refused.value.detail
        assert "web" in refused.value.detail
        assert world.account.name in refused.value.detail
    assert await count_vps(world) == 1


@pytest.mark.parametrize("alias", ["symlink", "dotdot", "hardlink", "relative"])
async def test_another_name_of_the_same_file_is_the_same_disk(
    world: World, tmp_path: Path, alias: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    x = disk(tmp_path)
    (tmp_path / "sub").mkdir()
    if alias == "symlink":
        other = tmp_path / "sub" / "link.qcow2"
        other.symlink_to(x)
    elif alias == "dotdot":
        other = tmp_path / "sub" / ".." / "web.qcow2"
    elif alias == "hardlink":
        other = tmp_path / "sub" / "hard.qcow2"
        os.link(x, other)
    else:
        monkeypatch.chdir(tmp_path / "sub")
        other = Path("../web.qcow2")
    await world.add_vps("web", disks=(x,))
    with pytest.raises(DiskAlreadyRegistered):
        await world.add_vps("copy", disks=(str(other),))
    # ...and within one VPS too.
    with pytest.raises(DiskAlreadyRegistered):
        await world.add_vps("both", disks=(disk(tmp_path, "fresh.qcow2"), str(other), str(other)))
    assert await count_vps(world) == 1


async def test_distinct_disks_and_nodes_are_fine(world: World, tmp_path: Path) -> None:
    a, b = disk(tmp_path, "a.qcow2"), disk(tmp_path, "b.qcow2")
    await world.add_vps("web", disks=(a, b))
    await world.add_vps("db", disks=(disk(tmp_path, "c.qcow2"),))
    # A path on another node is another file (disk files are the node's own).
    other_node = await world.runtime.services.accounts.add_vps(
        NewVps(
            account_name=world.account.name, name="far", disks=(a,), snapshot_slots=1, node="node-2"
        )
    )
    assert other_node.disks == (a,)
    assert await count_vps(world) == 3


async def test_disks_that_do_not_exist_here_are_compared_by_path(world: World) -> None:
    # Disks of a remote libvirt host, or the fake driver's: no inode to read, the real path
    # (`..` resolved) still counts.
    await world.add_vps("web", disks=("/nowhere/x.qcow2",))
    with pytest.raises(DiskAlreadyRegistered):
        await world.add_vps("copy", disks=("/nowhere/sub/../x.qcow2",))


async def test_the_store_refuses_a_disk_twice_whatever_the_caller(world: World) -> None:
    """The constraint in the store, for a caller that skips the service's check."""

    def vps(name: str) -> Vps:
        return Vps(
            id=new_id("vps"),
            account_id=world.account.id,
            name=name,
            node="local",
            disks=("/srv/x.qcow2",),
            snapshot_slots=1,
            service_status=ServiceStatus.ACTIVE,
            created_at=datetime.now(UTC),
            resources=Resources(1, 1.0, 0.0),
        )

    async with world.store.transaction() as tx:
        await tx.add_vps(vps("one"))
    with pytest.raises(Conflict):
        async with world.store.transaction() as tx:
            await tx.add_vps(vps("two"))
    assert [v.name for v, _ in await world.runtime.services.accounts.list_vps()] == ["one"]


async def test_vps_update_keeps_one_disk_one_vps(world: World, tmp_path: Path) -> None:
    """`vps update --disk` and `--node` (the other commands that change disks) go through the
    same rule: a disk of another VPS is refused; a disk given up is free again."""
    from vpsnap.drivers.qemu_img import QemuImg
    from vpsnap.services.accounts import VpsChange

    accounts = world.runtime.services.accounts
    # update_vps checks new disks like `vps add` does: real qcow2 images.
    a, b, c = (str(tmp_path / f"{n}.qcow2") for n in "abc")
    for path in (a, b, c):
        await QemuImg().create_image(path, 1024**2)
    first = await world.add_vps("first", disks=(a,))
    second = await world.add_vps("second", disks=(b,))

    with pytest.raises(DiskAlreadyRegistered) as refused:
        await accounts.update_vps(
            second.id, VpsChange(disks=(b, str(Path(a).parent / "." / "a.qcow2")))
        )
    assert first.id in refused.value.detail
    hard_link = str(tmp_path / "c-link.qcow2")
    os.link(c, hard_link)
    with pytest.raises(DiskAlreadyRegistered):
        await accounts.update_vps(second.id, VpsChange(disks=(c, hard_link)))

    await accounts.update_vps(second.id, VpsChange(disks=(c,)))
    # b was given up: another VPS may have it now; c is taken.
    await world.add_vps("third", disks=(b,))
    with pytest.raises(DiskAlreadyRegistered):
        await world.add_vps("fourth", disks=(c,))

    # Disks are one VPS's per node: on another node the path is another file.
    moved = await accounts.update_vps(first.id, VpsChange(node="hv-2"))
    assert moved.node == "hv-2"
    await world.add_vps("fifth", disks=(a,))
    with pytest.raises(DiskAlreadyRegistered):
        await accounts.update_vps(moved.id, VpsChange(node="local"))


async def test_removing_a_vps_frees_its_disks(world: World, tmp_path: Path) -> None:
    x = disk(tmp_path)
    first = await world.add_vps("web", disks=(x,))
    await world.runtime.services.accounts.remove_vps(first.id)
    await world.add_vps("again", disks=(x,))
