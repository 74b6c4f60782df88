"""``client.snapshots``: list, create, delete and restore snapshots, and ``create_safely``,
the whole careful dance before a snapshot in one call."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from typing import Any

from vpsnap.client import _room
from vpsnap.client._http import exchange, fetch
from vpsnap.client._plan import Notify, Plan, get, mutation
from vpsnap.client._room import MAKE_ROOM_CHOICES, MakeRoom, Step
from vpsnap.client._runners import Bound, M, Runner, api_method
from vpsnap.client.errors import CannotMakeRoom, Forbidden, SnapshotNotFound
from vpsnap.client.inventory import Inventory, VpsRef, vps_path
from vpsnap.client.jobs import DEFAULT_WAIT_TIMEOUT, Job, Operation, parse_operation, wait_for_job
from vpsnap.client.models import Snapshot, SnapshotList, Vps


class Snapshots(Bound[M]):
    """``client.snapshots``. ``vps`` is a ``Vps``, an id, a name or a primary IP everywhere."""

    def __init__(self, runner: Runner[M]) -> None:
        self._runner = runner
        self._inventory: Inventory[M] = Inventory(runner)

    def _list(self, vps: VpsRef) -> Plan[SnapshotList]:
        """``GET …/snapshots``: snapshots oldest first, slot limits, and the create/restore
        gates."""
        vps_id = yield from self._inventory._resolve_id(vps)
        return (
            yield from fetch(
                get(vps_path(vps_id, "snapshots")),
                self._runner.policy,
                lambda raw: SnapshotList.parse(vps_id, raw),
            )
        )

    list = api_method(_list)

    def _get(self, vps: VpsRef, name: str) -> Plan[Snapshot]:
        """One snapshot by name (ignoring case); ``SnapshotNotFound`` when there is none."""
        listing = yield from self._list(vps)
        snapshot = listing.find(name)
        if snapshot is None:
            label = vps.name if isinstance(vps, Vps) else vps
            raise SnapshotNotFound(f"{label} has no snapshot named {name!r}")
        return snapshot

    get = api_method(_get)

    def _operation(self, method: str, path: str, body: dict[str, Any] | None) -> Plan[Operation[M]]:
        response = yield from exchange(mutation(method, path, body), self._runner.policy)
        return parse_operation(self._runner, response)

    def _create(
        self,
        vps: VpsRef,
        name: str,
        *,
        description: str | None = None,
        include_memory_state: bool = False,
        quiesce: bool = True,
    ) -> Plan[Operation[M]]:
        """``POST …/snapshots``: queue a snapshot (no checks of its own; see
        ``create_safely``). Returns the operation; ``.wait()`` for its job."""
        vps_id = yield from self._inventory._resolve_id(vps)
        body: dict[str, Any] = {"name": name}
        if description is not None:
            body["description"] = description
        if include_memory_state:
            body["includeMemoryState"] = True
        if not quiesce:
            body["quiesce"] = False
        return (yield from self._operation("POST", vps_path(vps_id, "snapshots"), body))

    create = api_method(_create)

    def _delete(self, vps: VpsRef, name: str) -> Plan[Operation[M]]:
        """``DELETE …/snapshots/{name}``: its slot is free at once; the job removes it from
        the disks."""
        vps_id = yield from self._inventory._resolve_id(vps)
        return (yield from self._operation("DELETE", vps_path(vps_id, "snapshots", name), None))

    delete = api_method(_delete)

    def _restore(self, vps: VpsRef, name: str) -> Plan[Operation[M]]:
        """``POST …/snapshots/{name}/actions/restore``: roll the VPS's disks back (destructive:
        changes since the snapshot are lost). The power state is kept."""
        vps_id = yield from self._inventory._resolve_id(vps)
        path = vps_path(vps_id, "snapshots", name, "actions", "restore")
        return (yield from self._operation("POST", path, None))

    restore = api_method(_restore)

    def _create_safely(
        self,
        vps: VpsRef,
        name: str,
        *,
        description: str | None = None,
        include_memory_state: bool = False,
        make_room: MakeRoom = "fail",
        wait: bool = True,
        timeout: float | None = DEFAULT_WAIT_TIMEOUT,
        on_step: Callable[[Step], object] | None = None,
        confirm: Callable[[Step], object] | None = None,
    ) -> Plan[Snapshot]:
        """Create a snapshot the careful way: find the VPS, read its gates and limits, make
        room as asked, create, wait for the job, and return the snapshot.

        ``make_room``: ``"fail"`` raises ``CannotMakeRoom`` when every slot is used;
        ``"delete-oldest"`` deletes the oldest available snapshot first (and waits for it);
        ``"buy-slot"`` previews and commits one more slot (needs ``write:vm``; billed).
        Raises ``SnapshotNameTaken`` before changing anything when the name is used, and
        ``CannotMakeRoom`` (saying why and what to do) when no slot can be had. ``timeout``
        bounds every wait together. With ``wait=False`` the snapshot is returned while still
        ``creating``; its ``job_id`` is the job to wait for.

        ``confirm(step)``, when given, is asked before making room (the step says which
        snapshot would be deleted, or the price of the slot); a false answer (awaited when it
        is an awaitable) raises ``CannotMakeRoom`` with ``reason_code="declined"`` and nothing
        is changed.
        """
        if make_room not in MAKE_ROOM_CHOICES:
            raise ValueError(f"make_room must be one of {MAKE_ROOM_CHOICES}, not {make_room!r}")
        deadline = None if timeout is None else time.monotonic() + timeout

        def remaining() -> float | None:
            return None if deadline is None else max(0.0, deadline - time.monotonic())

        def step(action: str, message: str) -> Plan[None]:
            if confirm is not None:
                answer = yield Notify(confirm, Step(action, message))
                if not answer:
                    raise CannotMakeRoom(
                        f"{message}: not confirmed.",
                        "Nothing was changed.",
                        reason_code="declined",
                    )
            if on_step is not None:
                yield Notify(on_step, Step(action, message))

        progress = None if on_step is None else _forward(on_step)

        target = yield from self._inventory._get(vps)
        label = target.name
        listing = yield from self._list(target)
        if not _room.has_free_slot(label, listing, name):
            if make_room == "delete-oldest":
                oldest = _room.oldest_to_delete(label, listing)
                yield from step(
                    "delete-oldest", f"deleting the oldest snapshot of {label}, {oldest.name!r}"
                )
                deletion = yield from self._delete(target, oldest.name)
                yield from wait_for_job(
                    self._runner, deletion.job_id, timeout=remaining(), on_progress=progress
                )
            elif make_room == "buy-slot":
                yield from self._buy_slot(target, listing, step)
            else:
                raise _room.no_room(label, listing)
        if on_step is not None:
            yield Notify(on_step, Step("create", f"creating snapshot {name!r} of {label}"))
        operation = yield from self._create(
            target, name, description=description, include_memory_state=include_memory_state
        )
        if wait:
            yield from wait_for_job(
                self._runner, operation.job_id, timeout=remaining(), on_progress=progress
            )
        created = (yield from self._list(target)).find(name)
        if created is None:
            raise SnapshotNotFound(
                f"snapshot {name!r} of {label} was created (job {operation.job_id}) but is gone "
                "already: something deleted it"
            )
        return dataclasses.replace(created, job_id=operation.job_id)

    create_safely = api_method(_create_safely)

    def _buy_slot(
        self,
        target: Vps,
        listing: SnapshotList,
        step: Callable[[str, str], Plan[None]],
    ) -> Plan[None]:
        label = target.name
        options = yield from self._inventory._upgrade_options(target)
        slots = _room.slots_to_buy(label, listing, options)
        try:
            preview = yield from self._inventory._configure(
                target, snapshot_slots=slots, dry_run=True
            )
        except Forbidden as exc:
            raise Forbidden(
                f"buying a snapshot slot for {label} needs an API key with the write:vm scope "
                f"({exc.detail}). Use such a key, or make room with "
                'make_room="delete-oldest".',
                status=exc.status,
                request_id=exc.request_id,
                extensions=exc.extensions,
                problem=exc.problem,
            ) from exc
        if not preview.can_commit.allowed:
            raise _room.refused_purchase(label, preview)
        yield from step(
            "buy-slot", _room.purchase_message(label, listing.limits.total_snapshots, preview)
        )
        yield from self._inventory._configure(target, snapshot_slots=slots)


def _forward(on_step: Callable[[Step], object]) -> Callable[[Job[Any]], object]:
    """A job progress callback that reports as workflow steps."""

    def on_progress(job: Job[Any]) -> object:
        return on_step(Step("wait", f"{job.type} {job.job_id}: {job.status}"))

    return on_progress
