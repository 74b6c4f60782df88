"""The behaviour every ``HypervisorDriver`` must show, run against each driver.

A test module subclasses ``DriverContract`` (as ``Test...``) and provides a ``driver_env``
fixture; this module itself is not collected.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from vpsnap.domain.errors import SnapshotNameTaken, SnapshotNotFound
from vpsnap.domain.model import Consistency, PowerAction, PowerState, Vps
from vpsnap.domain.ports import HypervisorDriver, RestorePoint, SnapshotRequest

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

PATTERN_A = 0xA1
PATTERN_B = 0xB2
PATTERN_C = 0xC3


@dataclass(frozen=True)
class DriverEnv:
    driver: HypervisorDriver
    vps: Vps
    write: Callable[[int], Awaitable[None]]
    """Overwrite the VPS's data (every disk) with a pattern."""
    holds: Callable[[int], Awaitable[bool]]
    """Whether the VPS's data (every disk) is exactly that pattern."""


async def _one_by_one(driver: HypervisorDriver, vps: Vps) -> PowerState | Exception:
    try:
        return await driver.power_state(vps)
    except Exception as exc:  # compared with the batch's answer
        return exc


def _answer(state: PowerState | Exception) -> object:
    """A state, or an error's type and what it tells the customer."""
    if isinstance(state, Exception):
        return type(state), getattr(state, "detail", str(state))
    return state


def names(points: list[RestorePoint]) -> list[str]:
    return [p.name for p in points]


async def snapshot(env: DriverEnv, name: str) -> None:
    await env.driver.create_snapshot(env.vps, SnapshotRequest(name=name))


class DriverContract:
    async def test_created_snapshot_is_listed_on_every_disk(self, driver_env: DriverEnv) -> None:
        env = driver_env
        taken = await env.driver.create_snapshot(env.vps, SnapshotRequest(name="alpha"))

        assert taken.consistency is Consistency.CRASH
        assert taken.includes_memory_state is False
        [point] = await env.driver.list_restore_points(env.vps)
        assert point.name == "alpha"
        assert point.disks == env.vps.disks
        assert point.created_at is not None
        assert point.created_at.utcoffset() is not None

    async def test_memory_state_is_not_claimed_for_a_stopped_vm(
        self, driver_env: DriverEnv
    ) -> None:
        env = driver_env
        taken = await env.driver.create_snapshot(
            env.vps, SnapshotRequest(name="m", include_memory_state=True, quiesce=True)
        )
        assert taken.consistency is Consistency.CRASH
        assert taken.includes_memory_state is False
        [point] = await env.driver.list_restore_points(env.vps)
        assert point.vm_state_size == 0

    async def test_power_state_of_a_vps_with_its_disks_is_stopped(
        self, driver_env: DriverEnv
    ) -> None:
        assert await driver_env.driver.power_state(driver_env.vps) is PowerState.STOPPED

    async def test_power_states_of_a_page_answer_as_power_state_does(
        self, driver_env: DriverEnv, tmp_path: Path
    ) -> None:
        env = driver_env
        # The same VPS twice and one whose disk file is not there (same machine, if any).
        missing = dataclasses.replace(
            env.vps, id="vps_01hzzzzzzzzzzzzzzzzzzzzzzz", disks=(str(tmp_path / "gone.qcow2"),)
        )
        page = [env.vps, missing, env.vps]
        expected = [await _one_by_one(env.driver, v) for v in page]
        got = await env.driver.power_states(page)
        assert [_answer(a) for a in got] == [_answer(e) for e in expected]
        assert got[0] is PowerState.STOPPED
        assert await env.driver.power_states([]) == []

    async def test_list_is_ordered_by_creation(self, driver_env: DriverEnv) -> None:
        env = driver_env
        for name in ("c", "a", "b"):
            await snapshot(env, name)
        points = await env.driver.list_restore_points(env.vps)
        assert names(points) == ["c", "a", "b"]
        stamps = [p.created_at for p in points if p.created_at is not None]
        assert len(stamps) == 3
        assert stamps == sorted(stamps)

    @pytest.mark.parametrize("again", ["alpha", "ALPHA"])
    async def test_duplicate_name_is_refused_and_nothing_changes(
        self, driver_env: DriverEnv, again: str
    ) -> None:
        env = driver_env
        await env.write(PATTERN_A)
        await snapshot(env, "alpha")
        before = await env.driver.list_restore_points(env.vps)
        await env.write(PATTERN_B)

        with pytest.raises(SnapshotNameTaken) as caught:
            await snapshot(env, again)

        assert "already exists on disk" in caught.value.detail
        assert caught.value.code == "snapshot_name_taken"
        assert await env.driver.list_restore_points(env.vps) == before
        # The original still holds the old data, not the data at the refused second attempt.
        await env.driver.restore_snapshot(env.vps, "alpha")
        assert await env.holds(PATTERN_A)

    async def test_delete_removes_it_and_is_idempotent(self, driver_env: DriverEnv) -> None:
        env = driver_env
        await snapshot(env, "keep")
        await snapshot(env, "drop")

        await env.driver.delete_snapshot(env.vps, "drop")
        assert names(await env.driver.list_restore_points(env.vps)) == ["keep"]

        await env.driver.delete_snapshot(env.vps, "drop")
        await env.driver.delete_snapshot(env.vps, "never-existed")
        assert names(await env.driver.list_restore_points(env.vps)) == ["keep"]

    async def test_restore_rolls_data_back(self, driver_env: DriverEnv) -> None:
        env = driver_env
        await env.write(PATTERN_A)
        await snapshot(env, "before")
        await env.write(PATTERN_B)
        assert await env.holds(PATTERN_B)

        outcome = await env.driver.restore_snapshot(env.vps, "before")

        assert await env.holds(PATTERN_A)
        assert not await env.holds(PATTERN_B)
        assert outcome.power_state_before is PowerState.STOPPED
        assert outcome.power_state_after is PowerState.STOPPED
        # Restoring keeps the snapshot, so it can be restored again.
        assert names(await env.driver.list_restore_points(env.vps)) == ["before"]

    async def test_restore_of_unknown_name_is_not_found_and_changes_nothing(
        self, driver_env: DriverEnv
    ) -> None:
        env = driver_env
        await env.write(PATTERN_A)
        await snapshot(env, "real")
        await env.write(PATTERN_B)

        with pytest.raises(SnapshotNotFound) as caught:
            await env.driver.restore_snapshot(env.vps, "ghost")

        assert "ghost" in caught.value.detail
        assert await env.holds(PATTERN_B)

    async def test_newer_snapshots_survive_a_restore(self, driver_env: DriverEnv) -> None:
        env = driver_env
        await env.write(PATTERN_A)
        await snapshot(env, "s1")
        await env.write(PATTERN_B)
        await snapshot(env, "s2")
        await env.write(PATTERN_C)

        await env.driver.restore_snapshot(env.vps, "s1")
        assert await env.holds(PATTERN_A)
        assert names(await env.driver.list_restore_points(env.vps)) == ["s1", "s2"]

        await env.driver.restore_snapshot(env.vps, "s2")
        assert await env.holds(PATTERN_B)

    async def test_numeric_name_is_not_confused_with_a_snapshot_id(
        self, driver_env: DriverEnv
    ) -> None:
        # qcow2 gives "alpha" id 1 and "1" id 2; `qemu-img snapshot -a 1` would pick "alpha".
        env = driver_env
        await env.write(PATTERN_A)
        await snapshot(env, "alpha")
        await env.write(PATTERN_B)
        await snapshot(env, "1")
        await env.write(PATTERN_C)

        await env.driver.restore_snapshot(env.vps, "1")
        assert await env.holds(PATTERN_B)

        await env.driver.restore_snapshot(env.vps, "alpha")
        assert await env.holds(PATTERN_A)

        await env.driver.delete_snapshot(env.vps, "1")
        assert names(await env.driver.list_restore_points(env.vps)) == ["alpha"]

    async def test_numeric_name_that_is_an_id_of_another_snapshot_is_still_unknown(
        self, driver_env: DriverEnv
    ) -> None:
        env = driver_env
        await env.write(PATTERN_A)
        await snapshot(env, "alpha")  # id 1 on a qcow2 disk
        await env.write(PATTERN_B)

        with pytest.raises(SnapshotNotFound):
            await env.driver.restore_snapshot(env.vps, "1")
        assert await env.holds(PATTERN_B)

        # Deleting "1" must not delete the snapshot whose id is 1.
        await env.driver.delete_snapshot(env.vps, "1")
        assert names(await env.driver.list_restore_points(env.vps)) == ["alpha"]

    async def test_snapshot_named_like_a_later_id_restores_itself(
        self, driver_env: DriverEnv
    ) -> None:
        # "2" gets id 1 and "x" gets id 2: restoring "2" must not pick "x".
        env = driver_env
        await env.write(PATTERN_A)
        await snapshot(env, "2")
        await env.write(PATTERN_B)
        await snapshot(env, "x")
        await env.write(PATTERN_C)

        await env.driver.restore_snapshot(env.vps, "2")
        assert await env.holds(PATTERN_A)


class LiveDriverContract:
    """What every driver does with a VPS whose VM runs.

    The ``live_env`` fixture gives a VPS with a machine the driver can start and stop (a VM
    vpsnap manages), running, with no guest agent answering.
    """

    async def test_disk_snapshot_of_a_running_vm_keeps_it_running(
        self, live_env: DriverEnv
    ) -> None:
        env = live_env
        taken = await env.driver.create_snapshot(
            env.vps, SnapshotRequest(name="live", quiesce=False)
        )

        assert taken.consistency is Consistency.CRASH
        assert taken.includes_memory_state is False
        assert await env.driver.power_state(env.vps) is PowerState.RUNNING
        assert await env.driver.power_states([env.vps]) == [PowerState.RUNNING]
        [point] = await env.driver.list_restore_points(env.vps)
        assert (point.name, point.disks, point.vm_state_size) == ("live", env.vps.disks, 0)

    async def test_snapshot_with_memory_state(self, live_env: DriverEnv) -> None:
        env = live_env
        taken = await env.driver.create_snapshot(
            env.vps, SnapshotRequest(name="ram", include_memory_state=True)
        )

        assert taken.consistency is Consistency.MEMORY
        assert taken.includes_memory_state is True
        assert await env.driver.power_state(env.vps) is PowerState.RUNNING
        [point] = await env.driver.list_restore_points(env.vps)
        assert point.name == "ram"
        assert point.vm_state_size > 0

    async def test_quiesce_without_an_answering_agent_is_crash_consistent(
        self, live_env: DriverEnv
    ) -> None:
        env = live_env
        taken = await env.driver.create_snapshot(env.vps, SnapshotRequest(name="q", quiesce=True))
        assert taken.consistency is Consistency.CRASH
        assert [p.name for p in await env.driver.list_restore_points(env.vps)] == ["q"]

    async def test_duplicate_name_is_refused_on_a_running_vm(self, live_env: DriverEnv) -> None:
        env = live_env
        await snapshot(env, "alpha")
        with pytest.raises(SnapshotNameTaken):
            await snapshot(env, "ALPHA")
        with pytest.raises(SnapshotNameTaken):
            await env.driver.create_snapshot(
                env.vps, SnapshotRequest(name="alpha", include_memory_state=True)
            )
        assert names(await env.driver.list_restore_points(env.vps)) == ["alpha"]

    async def test_restore_of_a_disk_snapshot_keeps_the_vm_running(
        self, live_env: DriverEnv
    ) -> None:
        env = live_env
        await env.write(PATTERN_A)
        await snapshot(env, "before")
        await env.write(PATTERN_B)

        outcome = await env.driver.restore_snapshot(env.vps, "before")

        assert (outcome.power_state_before, outcome.power_state_after) == (
            PowerState.RUNNING,
            PowerState.RUNNING,
        )
        assert await env.driver.power_state(env.vps) is PowerState.RUNNING
        assert await env.holds(PATTERN_A)
        assert names(await env.driver.list_restore_points(env.vps)) == ["before"]

    async def test_restore_with_memory_state_keeps_the_vm_running(
        self, live_env: DriverEnv
    ) -> None:
        env = live_env
        await env.write(PATTERN_A)
        await env.driver.create_snapshot(
            env.vps, SnapshotRequest(name="ram", include_memory_state=True)
        )
        await env.write(PATTERN_B)

        outcome = await env.driver.restore_snapshot(env.vps, "ram")

        assert (outcome.power_state_before, outcome.power_state_after) == (
            PowerState.RUNNING,
            PowerState.RUNNING,
        )
        assert await env.holds(PATTERN_A)
        assert not await env.holds(PATTERN_B)

    async def test_delete_on_a_running_vm_both_kinds(self, live_env: DriverEnv) -> None:
        env = live_env
        await snapshot(env, "disk")
        await env.driver.create_snapshot(
            env.vps, SnapshotRequest(name="ram", include_memory_state=True)
        )
        await snapshot(env, "keep")

        await env.driver.delete_snapshot(env.vps, "ram")
        await env.driver.delete_snapshot(env.vps, "disk")
        await env.driver.delete_snapshot(env.vps, "disk")  # gone already: fine
        await env.driver.delete_snapshot(env.vps, "never-existed")

        assert names(await env.driver.list_restore_points(env.vps)) == ["keep"]
        assert await env.driver.power_state(env.vps) is PowerState.RUNNING

    async def test_stop_and_start_are_idempotent(self, live_env: DriverEnv) -> None:
        env = live_env
        stopped = await env.driver.change_power(env.vps, PowerAction.STOP)
        assert (stopped.power_state_before, stopped.power_state_after) == (
            PowerState.RUNNING,
            PowerState.STOPPED,
        )
        assert await env.driver.power_state(env.vps) is PowerState.STOPPED
        again = await env.driver.change_power(env.vps, PowerAction.STOP)
        assert again.power_state_after is PowerState.STOPPED

        started = await env.driver.change_power(env.vps, PowerAction.START)
        assert (started.power_state_before, started.power_state_after) == (
            PowerState.STOPPED,
            PowerState.RUNNING,
        )
        again = await env.driver.change_power(env.vps, PowerAction.START)
        assert (again.power_state_before, again.power_state_after) == (
            PowerState.RUNNING,
            PowerState.RUNNING,
        )

    async def test_reset_keeps_the_vm_running(self, live_env: DriverEnv) -> None:
        env = live_env
        outcome = await env.driver.change_power(env.vps, PowerAction.RESET)
        assert outcome.power_state_after is PowerState.RUNNING

    async def test_forced_restart_ends_running(self, live_env: DriverEnv) -> None:
        env = live_env
        outcome = await env.driver.change_power(env.vps, PowerAction.RESTART, force=True)
        assert (outcome.power_state_before, outcome.power_state_after) == (
            PowerState.RUNNING,
            PowerState.RUNNING,
        )

    async def test_restore_of_a_stopped_vm_keeps_it_stopped(self, live_env: DriverEnv) -> None:
        env = live_env
        await env.write(PATTERN_A)
        await env.driver.create_snapshot(
            env.vps, SnapshotRequest(name="ram", include_memory_state=True)
        )
        await env.driver.change_power(env.vps, PowerAction.STOP)
        await env.write(PATTERN_B)

        outcome = await env.driver.restore_snapshot(env.vps, "ram")

        assert (outcome.power_state_before, outcome.power_state_after) == (
            PowerState.STOPPED,
            PowerState.STOPPED,
        )
        assert await env.holds(PATTERN_A)

    async def test_snapshot_taken_while_stopped_restores_after_start(
        self, live_env: DriverEnv
    ) -> None:
        env = live_env
        await env.driver.change_power(env.vps, PowerAction.STOP)
        await env.write(PATTERN_A)
        await snapshot(env, "offline")
        await env.driver.change_power(env.vps, PowerAction.START)
        await env.write(PATTERN_B)

        await env.driver.restore_snapshot(env.vps, "offline")

        assert await env.driver.power_state(env.vps) is PowerState.RUNNING
        assert await env.holds(PATTERN_A)
