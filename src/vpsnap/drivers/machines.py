"""QEMU processes that vpsnap starts itself (managed VMs), one directory each in the data dir.

``<data-dir>/machines/<vps-id>/`` holds the job monitor ``qmp.sock``, the status monitor
``qmp-status.sock`` (so an API read of the power state never waits behind a running snapshot),
the guest-agent channel ``qga.sock`` and QEMU's ``pid`` file. vpsnap binds the three sockets
itself and hands QEMU the listening descriptors (``-chardev socket,fd=N``, as libvirt does): a
socket path of any length works (``unix_sockets``; QEMU would have to fit it in a unix address)
and QEMU never creates or unlinks files in the directory. QEMU daemonizes into its own session,
so a VM outlives a vpsnap restart; vpsnap finds it again through that directory. "Never
orphaned": a pid counts only if /proc shows a QEMU started with this directory's pid file, so a
recycled pid is never mistaken for the VM (or killed), and stale files from a VM that died are
removed before the next start.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import os
import signal
import socket
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import structlog

from vpsnap.domain.errors import HypervisorError
from vpsnap.domain.model import LaunchSpec, Vps
from vpsnap.drivers.unix_sockets import listening_socket

_log = structlog.get_logger(__name__)

_POLL_SECONDS = 0.05
_MAX_ERROR_CHARS = 2000


#: The chardev id of a managed VM's guest-agent channel (QMP ``query-chardev`` ``label``).
GUEST_AGENT_CHARDEV = "qga"


def disk_node(index: int) -> str:
    """The QMP node name of a managed VM's disk ``index`` (its qcow2 format node)."""
    return f"vd{index}"


def disk_device(index: int) -> str:
    """The qdev id of a managed VM's disk ``index``."""
    return f"vd{index}-dev"


@dataclass(frozen=True, slots=True)
class MachineDir:
    path: Path

    @property
    def qmp_socket(self) -> Path:
        return self.path / "qmp.sock"

    @property
    def status_socket(self) -> Path:
        return self.path / "qmp-status.sock"

    @property
    def guest_agent_socket(self) -> Path:
        return self.path / "qga.sock"

    @property
    def guest_agent_chardev(self) -> str:
        """The id of the guest-agent channel's chardev (QMP ``query-chardev`` ``label``)."""
        return GUEST_AGENT_CHARDEV

    @property
    def pidfile(self) -> Path:
        return self.path / "pid"

    @property
    def lockfile(self) -> Path:
        return self.path / "launch.lock"

    def files(self) -> tuple[Path, ...]:
        return (self.qmp_socket, self.status_socket, self.guest_agent_socket, self.pidfile)


@dataclass(frozen=True, slots=True)
class ListeningSockets:
    """A managed VM's three sockets, bound and listening, to be handed to its QEMU.

    The QEMU process inherits them (``pass_fds=fds``); the caller closes its own copies once
    QEMU has started (``close``, or use it as a context manager). The files stay: QEMU listens
    on them; ``_remove_files`` removes them when the VM is gone.
    """

    qmp: socket.socket
    status: socket.socket
    guest_agent: socket.socket

    @property
    def fds(self) -> tuple[int, int, int]:
        """The descriptors QEMU must inherit (``pass_fds``)."""
        return (self.qmp.fileno(), self.status.fileno(), self.guest_agent.fileno())

    def close(self) -> None:
        """Close vpsnap's copies (QEMU keeps its own)."""
        for listener in (self.qmp, self.status, self.guest_agent):
            listener.close()

    def __enter__(self) -> ListeningSockets:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


def bind_sockets(machine: MachineDir) -> ListeningSockets:
    """Bind the machine's three sockets (no file may be at their paths yet).

    Raises ``OSError`` when one cannot be bound (those already bound are closed).
    """
    bound: list[socket.socket] = []
    try:
        for path in (machine.qmp_socket, machine.status_socket, machine.guest_agent_socket):
            bound.append(listening_socket(path))  # noqa: PERF401 - one at a time: a failure closes those bound
    except BaseException:
        for listener in bound:
            listener.close()
        raise
    return ListeningSockets(*bound)


class ManagedMachines:
    """Starts, finds and ends the QEMU processes of managed VMs under one data dir."""

    def __init__(
        self, data_dir: Path, qemu_system: str = "qemu-system-x86_64", timeout: float = 30.0
    ) -> None:
        self.root = data_dir.resolve() / "machines"
        self.qemu_system = qemu_system
        self.timeout = timeout
        self._launching: dict[str, asyncio.Lock] = {}

    def dir_for(self, vps_id: str) -> MachineDir:
        if not vps_id or "/" in vps_id or vps_id.startswith("."):
            raise HypervisorError(
                "This VPS's id cannot name a VM directory.",
                log_detail=f"unusable VPS id for a machine directory: {vps_id!r}",
            )
        return MachineDir(self.root / vps_id)

    def pid(self, vps_id: str) -> int | None:
        """The pid of the VPS's running QEMU, or None. Cheap (two small file reads)."""
        machine = self.dir_for(vps_id)
        try:
            pid = int(machine.pidfile.read_text().strip())
        except (OSError, ValueError):
            return None
        return pid if _is_our_qemu(pid, machine) else None

    def _exiting(self, vps_id: str) -> bool:
        """The pidfile's process is dying: its memory is gone (empty cmdline) but it may still
        hold files, such as the disks' locks, until every thread of it has exited.

        QEMU has many threads. The group leader turns zombie as soon as *it* has exited, while
        the others may still be closing the process's files: the image locks are free only when
        the last thread is gone, so a zombie leader with threads left still counts as exiting.
        """
        try:
            pid = int(self.dir_for(vps_id).pidfile.read_text().strip())
            stat = Path(f"/proc/{pid}/stat").read_text()
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            threads = sum(1 for _ in Path(f"/proc/{pid}/task").iterdir())
        except (OSError, ValueError):
            return False
        # The state letter follows the parenthesised command name, which may contain spaces.
        state = stat.rpartition(")")[2].split()[0]
        if state in ("Z", "X"):
            return threads > 1
        return not cmdline

    def running(self) -> Iterator[tuple[str, int]]:
        """(vps id, pid) of every managed VM of this data dir that is running now."""
        if not self.root.is_dir():
            return
        for entry in sorted(self.root.iterdir()):
            pid = self.pid(entry.name)
            if pid is not None:
                yield entry.name, pid

    @contextlib.asynccontextmanager
    async def _launch_lock(self, machine: MachineDir, vps_id: str) -> AsyncIterator[None]:
        """One launch of a VM at a time, in this process (asyncio lock) and across processes
        (``flock`` on the machine dir's lock file): a second launch that checked "not running"
        before the first wrote its pid file would otherwise remove that file and leave an
        untracked QEMU holding the disks."""
        async with self._launching.setdefault(vps_id, asyncio.Lock()):
            await asyncio.to_thread(machine.path.mkdir, parents=True, exist_ok=True, mode=0o700)
            handle = await asyncio.to_thread(machine.lockfile.open, "a")
            try:
                loop = asyncio.get_running_loop()
                deadline = loop.time() + self.timeout
                while True:
                    try:
                        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                        break
                    except BlockingIOError:
                        if loop.time() >= deadline:
                            raise HypervisorError(
                                f"another process is starting the VM of {vps_id}"
                            ) from None
                        await asyncio.sleep(_POLL_SECONDS)
                yield
            finally:
                handle.close()  # releases the flock

    async def launch(self, vps: Vps, spec: LaunchSpec) -> int:
        """Start the VM (it must not be running) and return its pid once QMP is listening."""
        machine = self.dir_for(vps.id)
        async with self._launch_lock(machine, vps.id):
            return await self._launch(vps, spec, machine)

    async def _launch(self, vps: Vps, spec: LaunchSpec, machine: MachineDir) -> int:
        if self.pid(vps.id) is not None:
            raise HypervisorError(f"The VM of {vps.name} is already running.")
        # A VM that was just killed may still be releasing its disks' locks.
        if not await self.wait_exit(vps.id, self.timeout):
            raise HypervisorError(f"The previous VM of {vps.name} is still shutting down.")
        await asyncio.to_thread(_prepare_dir, machine)
        try:
            sockets = await asyncio.to_thread(bind_sockets, machine)
        except OSError as exc:
            await asyncio.to_thread(_remove_files, machine)  # any socket bound before the failure
            raise HypervisorError(
                f"The VM of {vps.name} cannot be started: its control sockets cannot be made.",
                log_detail=f"cannot bind the sockets in {machine.path}: {exc!r}",
            ) from exc
        # QEMU has its own copies once it runs: ours are closed however the start ends.
        with sockets:
            return await self._spawn(vps, spec, machine, sockets)

    async def _spawn(
        self, vps: Vps, spec: LaunchSpec, machine: MachineDir, sockets: ListeningSockets
    ) -> int:
        argv = [self.qemu_system, *launch_arguments(vps, spec, machine, sockets)]
        try:
            process = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                pass_fds=sockets.fds,
            )
        except OSError as exc:
            await asyncio.to_thread(_remove_files, machine)
            raise HypervisorError(
                f"The VM of {vps.name} cannot be started: the hypervisor cannot be run on this "
                "host.",
                log_detail=f"cannot run {self.qemu_system}: {exc}",
            ) from exc
        try:
            # With -daemonize the first process exits once the VM is set up (sockets bound).
            async with asyncio.timeout(self.timeout):
                _, stderr = await process.communicate()
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()
            await self.kill(vps.id)
            raise HypervisorError(
                f"The VM of {vps.name} did not start within {self.timeout:g}s.",
                log_detail=f"{self.qemu_system} did not start within {self.timeout:g}s: "
                f"{' '.join(argv)}",
            ) from None
        if process.returncode != 0:
            await asyncio.to_thread(_remove_files, machine)
            message = _without_cpu_warnings(stderr.decode("utf-8", errors="replace"))
            # QEMU's message names files, sockets and options: the operator's log has it.
            raise HypervisorError(
                f"The VM of {vps.name} could not be started: the hypervisor refused its "
                "configuration or could not open its disks. The provider's log has the reason.",
                log_detail=f"{self.qemu_system} failed to start the VM of {vps.name} "
                f"(exit {process.returncode}): {message[:_MAX_ERROR_CHARS] or 'no output'}; "
                f"command: {' '.join(argv)}",
            )
        pid = self.pid(vps.id)
        if pid is None:
            raise HypervisorError(f"The VM of {vps.name} exited right after it started.")
        _log.info("vm_launched", vps_id=vps.id, pid=pid)
        return pid

    async def wait_exit(self, vps_id: str, timeout: float) -> bool:
        """Wait up to ``timeout`` for the VM's process to end; True when it has."""
        # The daemonized QEMU is not our child, so there is nothing to waitpid() on: poll.
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self.pid(vps_id) is not None or self._exiting(vps_id):
            if loop.time() >= deadline:
                return False
            await asyncio.sleep(_POLL_SECONDS)
        await asyncio.to_thread(_remove_files, self.dir_for(vps_id))
        return True

    async def kill(self, vps_id: str) -> None:
        """End the VM's process at once (SIGKILL) and remove its files."""
        pid = self.pid(vps_id)
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            if not await self.wait_exit(vps_id, self.timeout):
                raise HypervisorError(
                    "The VM's process did not end when it was killed.",
                    log_detail=f"QEMU process {pid} did not end after SIGKILL",
                )
            _log.warning("vm_killed", vps_id=vps_id, pid=pid)
        await asyncio.to_thread(_remove_files, self.dir_for(vps_id))


def launch_arguments(
    vps: Vps, spec: LaunchSpec, machine: MachineDir, sockets: ListeningSockets
) -> list[str]:
    """The qemu-system command line (without the program) of a managed VM.

    QEMU must inherit ``sockets`` (``pass_fds=sockets.fds``): its monitors and guest-agent
    channel listen on them.
    """
    args = [
        "-name",
        _option_value(f"vpsnap-{vps.id}"),
        # KVM when the host has it, else plain emulation: tests and small labs run anywhere.
        "-machine",
        "accel=kvm:tcg",
        "-m",
        str(spec.memory_mib),
        "-smp",
        str(spec.cpus),
        "-nodefaults",
        "-no-user-config",
        "-display",
        "none",
    ]
    for index, disk in enumerate(vps.disks):
        file_node = f"{disk_node(index)}-file"
        # JSON form: no escaping rules for file names with commas or equals signs.
        args += [
            "-blockdev",
            json.dumps({"driver": "file", "filename": disk, "node-name": file_node}),
            "-blockdev",
            json.dumps({"driver": "qcow2", "file": file_node, "node-name": disk_node(index)}),
            "-device",
            f"virtio-blk-pci,drive={disk_node(index)},id={disk_device(index)}",
        ]
    for chardev, listener in (("qmp", sockets.qmp), ("qmp-status", sockets.status)):
        args += [
            "-chardev",
            f"socket,id={chardev},fd={listener.fileno()},server=on,wait=off",
            "-mon",
            f"chardev={chardev},mode=control",
        ]
    args += [
        "-chardev",
        f"socket,id={GUEST_AGENT_CHARDEV},fd={sockets.guest_agent.fileno()},server=on,wait=off",
        "-device",
        "virtio-serial-pci,id=serial0",
        "-device",
        f"virtserialport,chardev={GUEST_AGENT_CHARDEV},name=org.qemu.guest_agent.0",
        "-daemonize",
        "-pidfile",
        str(machine.pidfile),
        *spec.extra_args,
    ]
    return args


def _is_our_qemu(pid: int, machine: MachineDir) -> bool:
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    # A zombie has an empty cmdline; a recycled pid has someone else's. The pid file's path is
    # one whole argument of every QEMU vpsnap starts (`-pidfile <dir>/pid`), and of no other.
    return os.fsencode(str(machine.pidfile)) in cmdline.split(b"\0")


def _prepare_dir(machine: MachineDir) -> None:
    machine.path.mkdir(parents=True, exist_ok=True, mode=0o700)
    # The VM is not running, so any socket or pid file here is left over from one that died.
    _remove_files(machine)


def _remove_files(machine: MachineDir) -> None:
    for path in machine.files():
        path.unlink(missing_ok=True)


def _option_value(text: str) -> str:
    # In QEMU's key=value option syntax a literal comma is written twice.
    return text.replace(",", ",,")


def _without_cpu_warnings(stderr: str) -> str:
    # TCG prints a line per CPU feature it cannot emulate; they bury the real error.
    lines = [
        line for line in stderr.splitlines() if "host doesn't support requested feature" not in line
    ]
    return "\n".join(lines).strip()
