"""libvirt hypervisor driver: a VPS is a libvirt domain, snapshots are libvirt internal snapshots.

libvirt-python (the optional ``vpsnap[libvirt]`` extra) is a blocking API, so every operation
runs in a worker thread with one connection per URI, shared and reopened when it drops. What
maps to what, and why, is in docs/libvirt.md; the short version:

- a running or paused domain: libvirt can only take an internal snapshot *with* RAM state
  (QEMU's ``savevm``; "internal snapshot of a running VM must include the memory state"), so
  every live snapshot here includes memory and says so (``consistency: memory``);
- a shut-off domain: a disk-only internal snapshot of every qcow2 disk (crash-consistent);
- a restore keeps the power state the domain had before it.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import threading
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypeVar
from xml.sax.saxutils import escape

import libvirt  # type: ignore[import-untyped]
import structlog

from vpsnap.domain.errors import (
    DiskUnusable,
    DomainError,
    HypervisorError,
    MemorySnapshotUnsupported,
    RestoreIncomplete,
    SnapshotNameTaken,
    SnapshotNotFound,
    VmConfigChanged,
    VpsNotReady,
)
from vpsnap.domain.model import (
    Consistency,
    LibvirtDomain,
    PowerAction,
    PowerState,
    VmConfig,
    VmFacts,
    Vps,
)
from vpsnap.domain.ports import (
    NOT_RUNNING_REASON,
    PowerOutcome,
    RestoreOutcome,
    RestorePoint,
    SnapshotRequest,
    TakenSnapshot,
)
from vpsnap.domain.rules import name_key
from vpsnap.drivers.qcow2 import Qcow2Unreadable, read_image

if TYPE_CHECKING:
    from vpsnap.domain.ports import HypervisorDriver

_log = structlog.get_logger(__name__)

T = TypeVar("T")

# libvirt's default error handler prints every error to stderr as well as raising it; vpsnap
# turns each one into a domain error with the same text, so the print would only duplicate it
# outside the structured log.
libvirt.registerErrorHandler(lambda _ctx, _err: None, None)

_NUMERIC_PREFIX = "#"
"""Stored before an all-digit vpsnap name in libvirt (``1`` is ``#1`` there). QEMU looks a
snapshot up by *id* first when it loads one (``loadvm``, ``qemu-img snapshot -a``), and qcow2
ids are numbers, so a snapshot named ``1`` could silently restore another snapshot whose id is 1.
``#`` is not allowed in vpsnap names, so the mapping cannot collide with a real name."""

_STATES: dict[int, PowerState] = {
    libvirt.VIR_DOMAIN_NOSTATE: PowerState.UNKNOWN,
    libvirt.VIR_DOMAIN_RUNNING: PowerState.RUNNING,
    libvirt.VIR_DOMAIN_BLOCKED: PowerState.RUNNING,  # running, waiting on a resource
    libvirt.VIR_DOMAIN_PAUSED: PowerState.PAUSED,
    libvirt.VIR_DOMAIN_SHUTDOWN: PowerState.STOPPING,  # the guest is shutting down
    libvirt.VIR_DOMAIN_SHUTOFF: PowerState.STOPPED,
    libvirt.VIR_DOMAIN_CRASHED: PowerState.ERROR,
    libvirt.VIR_DOMAIN_PMSUSPENDED: PowerState.PAUSED,  # suspended to RAM by the guest
}

# The domain is not in a state that allows the operation now: the user can act on that.
_NOT_READY_ERRORS = frozenset(
    {
        libvirt.VIR_ERR_OPERATION_INVALID,
        libvirt.VIR_ERR_AGENT_UNRESPONSIVE,
        libvirt.VIR_ERR_SNAPSHOT_REVERT_RISKY,
    }
)
# libvirt refuses these because of how the domain is defined (a disk type internal snapshots
# cannot cover, a revert libvirt considers unsafe): only a change of the domain helps.
_CONFIG_ERRORS = frozenset(
    {libvirt.VIR_ERR_CONFIG_UNSUPPORTED, libvirt.VIR_ERR_SNAPSHOT_REVERT_RISKY}
)
_POLL_SECONDS = 0.2
_PROBE_SECONDS = 5.0  # /readyz must answer even when a libvirtd hangs
_THREADS = 8
"""libvirt calls run in a pool of their own: a hung libvirtd blocks these threads until it
answers (the caller gives up at its timeout, the thread cannot), and with the shared default
pool that would soon block every other ``asyncio.to_thread`` of the process (the QEMU driver's
image reads, for every other VPS)."""


@dataclass(frozen=True, slots=True)
class DomainDisk:
    """A disk of a libvirt domain as its XML describes it."""

    target: str
    source: str | None
    """The file path (``None`` for network and volume disks, which vpsnap cannot snapshot)."""
    format: str | None
    read_only: bool


@dataclass(frozen=True, slots=True)
class DomainDescription:
    """What ``vpsnap admin vps import-libvirt`` needs to know about a domain."""

    name: str
    uuid: str
    persistent: bool
    power_state: PowerState
    vcpus: int
    memory_mib: int
    disks: tuple[DomainDisk, ...]
    capacity_bytes: int
    """Sum of the virtual sizes of the snapshottable (qcow2) disks."""

    @property
    def qcow2_disks(self) -> tuple[str, ...]:
        return _qcow2_sources(self.disks)

    @property
    def unsnapshottable_disks(self) -> tuple[DomainDisk, ...]:
        """Writable disks an internal snapshot cannot cover: libvirt refuses the whole snapshot."""
        uncovered = set(_uncovered(self.disks))
        return tuple(d for d in self.disks if d.target in uncovered)


def to_libvirt_name(name: str) -> str:
    return _NUMERIC_PREFIX + name if name.isdigit() else name


def from_libvirt_name(raw: str) -> str:
    rest = raw.removeprefix(_NUMERIC_PREFIX)
    return rest if rest != raw and rest.isdigit() else raw


class _Connections:
    """One libvirt connection per URI, shared by every thread and reopened once it is dead.

    libvirt connections are thread-safe; only opening and replacing them needs the lock, so
    two threads never open the same URI twice.
    """

    def __init__(self, opener: Callable[[str], Any]) -> None:
        self._opener = opener
        self._lock = threading.Lock()
        self._open: dict[str, Any] = {}

    def get(self, uri: str) -> Any:
        with self._lock:
            conn = self._open.get(uri)
            if conn is not None and _alive(conn):
                return conn
            if conn is not None:
                _log.info("libvirt_reconnect", uri=uri)
                _close_quietly(conn)
            try:
                conn = self._opener(uri)
            except libvirt.libvirtError as exc:
                raise HypervisorError(
                    "The hypervisor (libvirt) cannot be reached.",
                    log_detail=f"cannot connect to libvirt at {uri}: "
                    f"{exc.get_error_message() or exc}",
                ) from exc
            self._open[uri] = conn
            return conn

    def forget(self, uri: str, conn: Any) -> None:
        """Drop ``conn`` if it is still the one cached for ``uri`` (it failed mid-call)."""
        with self._lock:
            if self._open.get(uri) is conn:
                del self._open[uri]
                _close_quietly(conn)

    def uris(self) -> list[str]:
        with self._lock:
            return list(self._open)

    def close_all(self) -> None:
        with self._lock:
            for conn in self._open.values():
                _close_quietly(conn)
            self._open.clear()


def _alive(conn: Any) -> bool:
    try:
        return bool(conn.isAlive())
    except libvirt.libvirtError:
        return False


def _close_quietly(conn: Any) -> None:
    # Closing a connection whose daemon went away may fail; it is discarded either way.
    with contextlib.suppress(libvirt.libvirtError):
        conn.close()


class LibvirtDriver:
    """``HypervisorDriver`` for VPSes whose machine is a ``LibvirtDomain``."""

    def __init__(
        self,
        *,
        shutdown_timeout: float = 60.0,
        status_timeout: float = 1.0,
        call_timeout: float = 600.0,
        opener: Callable[[str], Any] = libvirt.open,
    ) -> None:
        """``status_timeout`` bounds a power-state read (past it: ``unknown``, as the QEMU
        driver answers); ``call_timeout`` bounds every other call, which may save or load RAM
        state. libvirt's client has no timeout of its own, so a hung libvirtd would otherwise
        hold a job forever."""
        self._shutdown_timeout = shutdown_timeout
        self._status_timeout = status_timeout
        self._call_timeout = call_timeout
        self._connections = _Connections(opener)
        self._executor = ThreadPoolExecutor(_THREADS, thread_name_prefix="vpsnap-libvirt")

    # -- HypervisorDriver ------------------------------------------------------------------

    async def probe(self) -> None:
        """Ask libvirtd on every URI vpsnap has used (URIs come with VPSes; none yet is fine:
        the library itself loaded)."""
        for uri in self._connections.uris():
            await self._with_connection(
                uri, lambda conn: conn.getLibVersion(), retry=True, timeout=_PROBE_SECONDS
            )

    async def power_state(self, vps: Vps) -> PowerState:
        try:
            return await self._run(vps, _power_state, retry=True, timeout=self._status_timeout)
        except HypervisorError as exc:
            if not isinstance(exc.__cause__, TimeoutError):
                raise
            return PowerState.UNKNOWN

    async def power_states(
        self, vpses: Sequence[Vps], *, concurrency: int = 8
    ) -> list[PowerState | Exception]:
        """One executor call per libvirt URI for the whole page (each domain's state is still
        a round trip to libvirtd), instead of a thread hop per VPS. A connection that breaks
        is reopened and the page read again, as ``power_state`` retries; past the page's
        timeout (``status_timeout`` for each ``_THREADS`` domains, the budget the reads had
        ``_THREADS`` at a time) every state of the page is ``unknown``."""
        del concurrency  # one thread reads the page
        results: list[PowerState | Exception] = [PowerState.UNKNOWN] * len(vpses)
        by_uri: dict[str, list[int]] = {}
        for i, vps in enumerate(vpses):
            if isinstance(vps.machine, LibvirtDomain):
                by_uri.setdefault(vps.machine.uri, []).append(i)
            else:
                results[i] = HypervisorError(f"VPS {vps.name} is not a libvirt domain.")
        for uri, indices in by_uri.items():
            page = [vpses[i] for i in indices]

            def read_page(conn: Any, uri: str = uri, page: list[Vps] = page) -> list[Any]:
                states: list[PowerState | Exception] = []
                for vps in page:
                    assert isinstance(vps.machine, LibvirtDomain)  # sorted above
                    try:
                        states.append(_power_state(_lookup_domain(conn, vps.machine)))
                    except libvirt.libvirtError as exc:
                        if not _alive(conn):
                            raise  # the connection broke: reopened and the page read again
                        states.append(_domain_error(exc, uri, vps))
                return states

            timeout = self._status_timeout * max(1.0, len(page) / _THREADS)
            try:
                states = await self._with_connection(uri, read_page, retry=True, timeout=timeout)
            except HypervisorError as exc:
                unknown = isinstance(exc.__cause__, TimeoutError)
                states = [PowerState.UNKNOWN if unknown else exc] * len(page)
            for i, state in zip(indices, states, strict=True):
                results[i] = state
        return results

    async def vm_facts(self, vps: Vps) -> VmFacts | None:
        def facts(dom: Any) -> VmFacts | None:
            if not dom.isActive():
                return None
            root = ET.fromstring(str(dom.XMLDesc(0)))  # noqa: S314 - XML from libvirtd
            return VmFacts(
                config=_domain_config(root),
                uncovered_devices=_uncovered(_disks(root)),
                # libvirt snapshots a live domain only with RAM, and restarts it for a restore.
                live_snapshots_include_memory=True,
                restarts_for_disk_restore=True,
                # A revert restarts the domain with the definition saved in the snapshot.
                restore_reverts_definition=True,
            )

        return await self._run(vps, facts, retry=True, timeout=self._status_timeout)

    async def list_restore_points(self, vps: Vps) -> list[RestorePoint]:
        return await self._run(vps, _list_points, retry=True)

    async def create_snapshot(self, vps: Vps, request: SnapshotRequest) -> TakenSnapshot:
        def create(dom: Any) -> TakenSnapshot:
            for raw in dom.snapshotListNames(0):
                existing = from_libvirt_name(str(raw))
                # vpsnap names are unique per VPS ignoring case; libvirt compares them exactly.
                if name_key(existing) == name_key(request.name):
                    raise SnapshotNameTaken(
                        f"a snapshot named {existing} already exists on disk (VPS {vps.name})"
                    )
            live = bool(dom.isActive())
            # vpsnap's snapshot XML names no disks, so libvirt covers every disk of the domain
            # and refuses one it cannot (a writable raw disk); said here in vpsnap's terms.
            _refuse_uncovered(vps, dom, live=live)
            # libvirt refuses a disk-only internal snapshot of a running or paused domain, so a
            # live one always carries RAM state; a shut-off domain has none to carry.
            memory = "internal" if live else "no"
            xml = (
                f"<domainsnapshot><name>{escape(to_libvirt_name(request.name))}</name>"
                "<description>taken by vpsnap</description>"
                f"<memory snapshot='{memory}'/></domainsnapshot>"
            )
            try:
                dom.snapshotCreateXML(xml, libvirt.VIR_DOMAIN_SNAPSHOT_CREATE_ATOMIC)
            except libvirt.libvirtError as exc:
                if _names_taken(dom, request.name):
                    # Someone created it between the check and the call.
                    raise SnapshotNameTaken(
                        f"a snapshot named {request.name} already exists on disk (VPS {vps.name})"
                    ) from exc
                raise
            if not live:
                return TakenSnapshot(
                    consistency=Consistency.CRASH,
                    includes_memory_state=False,
                    consistency_reason=NOT_RUNNING_REASON,
                )
            if not request.include_memory_state:
                _log.info(
                    "libvirt_snapshot_includes_memory",
                    vps_id=vps.id,
                    snapshot=request.name,
                    reason="libvirt takes internal snapshots of a live domain only with RAM",
                )
            # No guest-agent freeze around it: RAM state is consistent by itself, and a guest
            # frozen while its RAM is saved would come back frozen on every restore.
            return TakenSnapshot(consistency=Consistency.MEMORY, includes_memory_state=True)

        return await self._run(vps, create)

    async def delete_snapshot(self, vps: Vps, name: str) -> None:
        def delete(dom: Any) -> None:
            snap = _lookup_snapshot(dom, name)
            if snap is None:
                return  # already gone: a re-run delete job
            snap.delete(0)

        await self._run(vps, delete)

    async def restore_snapshot(
        self,
        vps: Vps,
        name: str,
        *,
        recorded: VmConfig | None = None,  # noqa: ARG002 - libvirt checks it itself
    ) -> RestoreOutcome:
        """libvirt keeps the domain definition with every snapshot and reverts it too (a domain
        given more RAM since is restarted with the snapshot's), refusing what it cannot do
        safely (``VmConfigChanged``), so ``recorded`` needs no check of vpsnap's own here."""

        def restore(dom: Any) -> RestoreOutcome:
            snap = _lookup_snapshot(dom, name)
            if snap is None:
                raise SnapshotNotFound(f"snapshot {name} does not exist on VPS {vps.name}")
            before = _power_state(dom)
            with_memory = _snapshot_has_memory(str(snap.getXMLDesc(0)))
            match before:
                case PowerState.RUNNING:
                    flags = libvirt.VIR_DOMAIN_SNAPSHOT_REVERT_RUNNING
                case PowerState.PAUSED:
                    flags = libvirt.VIR_DOMAIN_SNAPSHOT_REVERT_PAUSED
                case PowerState.STOPPED:
                    # A snapshot with RAM would start the domain; start it paused (the guest
                    # runs no instruction, so writes nothing) and power it off again below.
                    flags = libvirt.VIR_DOMAIN_SNAPSHOT_REVERT_PAUSED if with_memory else 0
                case _:
                    raise VpsNotReady(
                        f"VPS {vps.name} is {before.value}: restore it once it is running, "
                        "paused or stopped."
                    )
            dom.revertToSnapshot(snap, flags)
            if before is PowerState.STOPPED and with_memory:
                try:
                    dom.destroy()
                except libvirt.libvirtError as exc:
                    # The revert took effect; only powering off again failed. Say so rather
                    # than report a failed restore with the domain paused on the snapshot.
                    raise RestoreIncomplete(
                        f"Snapshot {name} was restored on VPS {vps.name} (disks and RAM, the "
                        "VM paused), but the VM could not be powered off again as it was before. "
                        "It is paused on the snapshot; stop it, or start it to resume there.",
                        extensions={
                            "disksRestored": list(range(1, len(vps.disks) + 1)),
                            "memoryRestored": True,
                            "powerStateAfter": _power_state(dom).value,
                        },
                        log_detail=f"destroy after revert failed: {exc.get_error_message()}",
                    ) from exc
            return RestoreOutcome(power_state_before=before, power_state_after=_power_state(dom))

        return await self._run(vps, restore)

    async def change_power(
        self, vps: Vps, action: PowerAction, *, force: bool = False
    ) -> PowerOutcome:
        # Not power_state(): its short API timeout is for display, these reads decide.
        before = await self._run(vps, _power_state, retry=True)
        if action is PowerAction.START or (action is PowerAction.RESTART and before in _OFF):
            await self._run(vps, _start)
        elif action is PowerAction.STOP or (action is PowerAction.RESTART and force):
            await self._run(vps, _stop)
            if action is PowerAction.RESTART:
                await self._run(vps, _start)
        elif action is PowerAction.SHUTDOWN or action is PowerAction.RESTART:
            await self._shut_down(vps)
            if action is PowerAction.RESTART:
                await self._run(vps, _start)
        elif action is PowerAction.RESET:
            await self._run(vps, lambda dom: _reset(vps, dom))
        return PowerOutcome(before, await self._run(vps, _power_state, retry=True))

    # -- libvirt-specific ------------------------------------------------------------------

    async def describe_domains(self, uri: str, only: Iterable[str] = ()) -> list[DomainDescription]:
        """Every domain on ``uri`` (or only those named), for importing them as VPSes."""
        wanted = list(only)

        def describe(conn: Any) -> list[DomainDescription]:
            if wanted:
                domains = [_lookup_domain(conn, LibvirtDomain(uri, ref)) for ref in wanted]
            else:
                domains = sorted(conn.listAllDomains(0), key=lambda d: str(d.name()))
            return [_describe(dom) for dom in domains]

        return await self._with_connection(uri, describe, retry=True)

    def close(self) -> None:
        self._connections.close_all()
        # Threads stuck in a hung libvirtd cannot be interrupted; do not wait for them.
        self._executor.shutdown(wait=False, cancel_futures=True)

    # -- helpers ---------------------------------------------------------------------------

    async def _shut_down(self, vps: Vps) -> None:
        def press_power_button(dom: Any) -> bool:
            if _power_state(dom) in _OFF:
                return False
            dom.shutdown()
            return True

        if not await self._run(vps, press_power_button):
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._shutdown_timeout
        while await self._run(vps, _power_state, retry=True) not in _OFF:
            if loop.time() >= deadline:
                raise VpsNotReady(
                    f"VPS {vps.name} did not power off within {self._shutdown_timeout:g}s of the "
                    "ACPI power button (the guest ignored it, or has no OS that handles it). "
                    "Use stop to power it off hard."
                )
            await asyncio.sleep(_POLL_SECONDS)

    async def _run(
        self,
        vps: Vps,
        work: Callable[[Any], T],
        *,
        retry: bool = False,
        timeout: float | None = None,
    ) -> T:
        """Run ``work(domain)`` in a thread on the VPS's domain, mapping libvirt errors."""
        machine = vps.machine
        if not isinstance(machine, LibvirtDomain):
            raise HypervisorError(f"VPS {vps.name} is not a libvirt domain.")

        def on_domain(conn: Any) -> T:
            return work(_lookup_domain(conn, machine))

        return await self._with_connection(
            machine.uri, on_domain, retry=retry, vps=vps, timeout=timeout
        )

    async def _with_connection(
        self,
        uri: str,
        work: Callable[[Any], T],
        *,
        retry: bool,
        vps: Vps | None = None,
        timeout: float | None = None,
    ) -> T:
        def call() -> T:
            attempts = 2 if retry else 1
            for attempt in range(1, attempts + 1):
                conn = self._connections.get(uri)
                try:
                    return work(conn)
                except libvirt.libvirtError as exc:
                    if not _alive(conn):
                        self._connections.forget(uri, conn)
                        if attempt < attempts:
                            # Only reads are retried: a change may or may not have happened
                            # before the connection broke, and its job re-run sorts that out.
                            continue
                        raise HypervisorError(
                            "The connection to the hypervisor (libvirt) was lost; it is "
                            "reopened on the next call.",
                            log_detail=f"lost the connection to libvirt at {uri} "
                            f"({exc.get_error_message() or exc})",
                        ) from exc
                    raise _domain_error(exc, uri, vps) from exc
            raise AssertionError("unreachable")  # pragma: no cover

        limit = self._call_timeout if timeout is None else timeout
        loop = asyncio.get_running_loop()
        context = contextvars.copy_context()  # as asyncio.to_thread does (log context)
        try:
            async with asyncio.timeout(limit):
                return await loop.run_in_executor(self._executor, context.run, call)
        except TimeoutError as exc:
            # The thread stays blocked in libvirt until it answers; only the caller moves on
            # (a job fails and is re-run, which first asks what exists).
            subject = f"VPS {vps.name}" if vps is not None else "The hypervisor"
            raise HypervisorError(
                f"{subject}: the hypervisor (libvirt) did not answer within {limit:g}s.",
                log_detail=f"libvirt at {uri} did not answer within {limit:g}s",
            ) from exc


_OFF = frozenset({PowerState.STOPPED})


def _start(dom: Any) -> None:
    state = _power_state(dom)
    if state is PowerState.PAUSED:
        dom.resume()
    elif state in _OFF or state is PowerState.ERROR:
        dom.create()


def _stop(dom: Any) -> None:
    if _power_state(dom) not in _OFF:
        dom.destroy()


def _reset(vps: Vps, dom: Any) -> None:
    if _power_state(dom) in _OFF:
        raise VpsNotReady(f"VPS {vps.name} is not running: there is nothing to reset.")
    dom.reset(0)


def _power_state(dom: Any) -> PowerState:
    state, _reason = dom.state(0)
    return _STATES.get(int(state), PowerState.UNKNOWN)


def _lookup_domain(conn: Any, machine: LibvirtDomain) -> Any:
    try:
        uuid.UUID(machine.domain)
    except ValueError:
        return conn.lookupByName(machine.domain)
    return conn.lookupByUUIDString(machine.domain)


def _lookup_snapshot(dom: Any, name: str) -> Any | None:
    try:
        return dom.snapshotLookupByName(to_libvirt_name(name), 0)
    except libvirt.libvirtError as exc:
        if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN_SNAPSHOT:
            return None
        raise


def _names_taken(dom: Any, name: str) -> bool:
    try:
        raws = dom.snapshotListNames(0)
    except libvirt.libvirtError:
        return False
    return any(name_key(from_libvirt_name(str(raw))) == name_key(name) for raw in raws)


def _snapshot_has_memory(xml: str) -> bool:
    memory = ET.fromstring(xml).find("memory")  # noqa: S314 - XML from libvirtd, not a user
    return memory is not None and memory.get("snapshot") == "internal"


def _list_points(dom: Any) -> list[RestorePoint]:
    # Topological order (parents first) breaks ties between snapshots taken in the same
    # second, since libvirt's creation time has only whole seconds.
    snaps = dom.listAllSnapshots(libvirt.VIR_DOMAIN_SNAPSHOT_LIST_TOPOLOGICAL)
    points = [_restore_point(str(s.getXMLDesc(0))) for s in snaps]
    sizes = _vm_state_sizes(points)
    points = [
        RestorePoint(p.name, p.disks, sizes.get(p.name, p.vm_state_size), p.created_at)
        for p in points
    ]
    return sorted(points, key=lambda p: p.created_at or datetime.min.replace(tzinfo=UTC))


def _restore_point(xml: str) -> RestorePoint:
    root = ET.fromstring(xml)  # noqa: S314 - XML from libvirtd, not a user
    sources = {d.target: d.source for d in _disks(root.find("domain"))}
    disks = tuple(
        sources.get(target) or target
        for disk in root.iterfind("disks/disk")
        if (target := disk.get("name")) and disk.get("snapshot", "internal") == "internal"
    )
    created = int(root.findtext("creationTime") or 0)
    memory = root.find("memory")
    with_memory = memory is not None and memory.get("snapshot") == "internal"
    return RestorePoint(
        name=from_libvirt_name(root.findtext("name") or ""),
        disks=disks,
        # libvirt does not report the size of the RAM state; 1 stands for "has some" until
        # _vm_state_sizes reads the real size from the image.
        vm_state_size=1 if with_memory else 0,
        created_at=datetime.fromtimestamp(created, UTC),
    )


def _vm_state_sizes(points: list[RestorePoint]) -> dict[str, int]:
    """Real RAM-state sizes from the qcow2 snapshot tables, where the images are readable here
    (a local URI); libvirt itself does not report them."""
    sizes: dict[str, int] = {}
    images: dict[str, list[tuple[str, int]]] = {}
    for point in points:
        if point.vm_state_size == 0:
            continue
        for disk in point.disks:
            if disk not in images:
                try:
                    images[disk] = [(s.name, s.vm_state_size) for s in read_image(disk).snapshots]
                except Qcow2Unreadable:
                    images[disk] = []
            raw = to_libvirt_name(point.name)
            for snap_name, size in images[disk]:
                if snap_name == raw and size > sizes.get(point.name, 0):
                    sizes[point.name] = size
    return sizes


def _disks(domain: ET.Element | None) -> list[DomainDisk]:
    if domain is None:
        return []
    found: list[DomainDisk] = []
    for disk in domain.iterfind("devices/disk"):
        target = disk.find("target")
        if target is None or not target.get("dev"):
            continue
        source = disk.find("source")
        driver = disk.find("driver")
        path = source.get("file") or source.get("dev") if source is not None else None
        read_only = disk.get("device") in ("cdrom", "floppy") or disk.find("readonly") is not None
        found.append(
            DomainDisk(
                target=target.get("dev", ""),
                source=path if disk.get("type") in ("file", "block") else None,
                format=driver.get("type") if driver is not None else None,
                read_only=read_only,
            )
        )
    return found


def _qcow2_sources(disks: Iterable[DomainDisk]) -> tuple[str, ...]:
    return tuple(d.source for d in disks if d.source and d.format == "qcow2" and not d.read_only)


def _uncovered(disks: Iterable[DomainDisk]) -> tuple[str, ...]:
    """Writable disks an internal snapshot cannot cover (libvirt refuses the whole snapshot)."""
    return tuple(
        d.target for d in disks if not d.read_only and (d.source is None or d.format != "qcow2")
    )


def _refuse_uncovered(vps: Vps, dom: Any, *, live: bool) -> None:
    root = ET.fromstring(str(dom.XMLDesc(0)))  # noqa: S314 - XML from libvirtd, not a user
    uncovered = _uncovered(_disks(root))
    if not uncovered:
        return
    devices = ", ".join(uncovered)
    if live:
        raise MemorySnapshotUnsupported(
            f"VPS {vps.name} has writable devices that internal snapshots cannot cover "
            f"({devices}), and libvirt snapshots a running VM only with its RAM state, which "
            "must cover every writable device. Nothing was changed.",
            extensions={"devices": list(uncovered)},
        )
    raise DiskUnusable(
        f"VPS {vps.name} has writable disks that internal snapshots cannot cover ({devices}: "
        "not qcow2), and libvirt snapshots every disk of the VM. Nothing was changed.",
        extensions={"devices": list(uncovered)},
    )


def _domain_config(root: ET.Element) -> VmConfig | None:
    memory = root.find("memory")
    os_type = root.find("os/type")
    if memory is None or memory.text is None or os_type is None:
        return None
    units = {"KiB": 1024, "MiB": 1024**2, "GiB": 1024**3, "b": 1, "bytes": 1}
    return VmConfig(
        memory_bytes=int(memory.text) * units.get(memory.get("unit", "KiB"), 1024),
        machine_type=os_type.get("machine", ""),
    )


def _describe(dom: Any) -> DomainDescription:
    root = ET.fromstring(str(dom.XMLDesc(0)))  # noqa: S314 - XML from libvirtd, not a user
    disks = tuple(_disks(root))
    return DomainDescription(
        name=str(dom.name()),
        uuid=str(dom.UUIDString()),
        persistent=bool(dom.isPersistent()),
        power_state=_power_state(dom),
        vcpus=int(root.findtext("vcpu") or 1),
        memory_mib=int(dom.maxMemory()) // 1024,
        disks=disks,
        capacity_bytes=sum(int(dom.blockInfo(path, 0)[0]) for path in _qcow2_sources(disks)),
    )


def _domain_error(exc: libvirt.libvirtError, uri: str, vps: Vps | None) -> DomainError:
    """libvirt's error in vpsnap's terms. libvirt's own message can hold host paths (disk
    images, sockets), so it goes to ``log_detail`` only."""
    code = exc.get_error_code()
    message = exc.get_error_message() or str(exc)
    subject = f"VPS {vps.name}" if vps is not None else "The hypervisor"
    log_detail = f"libvirt at {uri} (error {code}): {message}"
    if code == libvirt.VIR_ERR_NO_DOMAIN:
        return VmConfigChanged(
            f"{subject}: its libvirt domain does not exist on this host (it was undefined or "
            "renamed, or lives on another host); the provider must register it again.",
            log_detail=log_detail,
        )
    if code == libvirt.VIR_ERR_NO_DOMAIN_SNAPSHOT:
        return SnapshotNotFound(f"{subject}: the snapshot does not exist.", log_detail=log_detail)
    if code in _NOT_READY_ERRORS:
        return VpsNotReady(
            f"{subject}: the hypervisor (libvirt) refused the operation in the VM's current state.",
            log_detail=log_detail,
        )
    if code in _CONFIG_ERRORS:
        return VmConfigChanged(
            f"{subject}: the hypervisor (libvirt) refused the operation because of how the VM "
            "is configured now; nothing was changed.",
            log_detail=log_detail,
        )
    return HypervisorError(
        f"{subject}: the hypervisor (libvirt) could not carry out the operation.",
        log_detail=log_detail,
    )


if TYPE_CHECKING:
    # mypy proves the class satisfies the port; nothing runs.
    def _implements_port(driver: LibvirtDriver) -> HypervisorDriver:
        return driver
