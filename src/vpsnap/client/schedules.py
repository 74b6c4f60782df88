"""``client.schedules``: a VPS's snapshot schedule (one per VPS): read, set, remove."""

from __future__ import annotations

from vpsnap.client._http import exchange, fetch
from vpsnap.client._plan import Plan, get, mutation
from vpsnap.client._runners import Bound, M, Runner, api_method
from vpsnap.client.inventory import Inventory, VpsRef, vps_path
from vpsnap.client.models import ScheduleState


class Schedules(Bound[M]):
    """``client.schedules``. ``vps`` is a ``Vps``, an id, a name or a primary IP."""

    def __init__(self, runner: Runner[M]) -> None:
        self._runner = runner
        self._inventory: Inventory[M] = Inventory(runner)

    def _get(self, vps: VpsRef) -> Plan[ScheduleState]:
        """``GET …/snapshot-schedules``: the schedule (``schedule`` is None without one), the
        slots, and whether one can be enabled."""
        vps_id = yield from self._inventory._resolve_id(vps)
        return (
            yield from fetch(
                get(vps_path(vps_id, "snapshot-schedules")),
                self._runner.policy,
                lambda raw: ScheduleState.parse(vps_id, raw),
            )
        )

    get = api_method(_get)

    def _set(
        self, vps: VpsRef, *, interval_hours: float, enabled: bool = True
    ) -> Plan[ScheduleState]:
        """``POST …/snapshot-schedules``: create or replace the schedule. The server floors and
        clamps ``interval_hours`` to 4..24. Needs ``write:vm``; enabling it on a VPS without
        slots raises ``SnapshotsNotIncluded``."""
        vps_id = yield from self._inventory._resolve_id(vps)
        body = {"enabled": enabled, "intervalHours": interval_hours}
        return (
            yield from fetch(
                mutation("POST", vps_path(vps_id, "snapshot-schedules"), body),
                self._runner.policy,
                lambda raw: ScheduleState.parse(vps_id, raw),
            )
        )

    set = api_method(_set)

    def _delete(self, vps: VpsRef) -> Plan[None]:
        """``DELETE …/snapshot-schedules``: remove the schedule (also when there is none); its
        snapshots are kept and expire as usual."""
        vps_id = yield from self._inventory._resolve_id(vps)
        yield from exchange(
            mutation("DELETE", vps_path(vps_id, "snapshot-schedules")), self._runner.policy
        )

    delete = api_method(_delete)
