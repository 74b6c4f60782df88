"""Async wrapper around the ``qemu-img`` and ``qemu-io`` binaries.

Used by the QEMU driver for qcow2 internal snapshots, and by demo setup, tests and benchmarks
to create images and write or verify data patterns.

Errors say what failed on which disk in the customer's words (``label``, e.g. "disk 2 of
web-1"); the image path, the command and the tool's output go to ``log_detail`` only.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import functools
import json
import os
import shutil
import signal
import subprocess
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from vpsnap.domain.errors import (
    DiskUnusable,
    DomainError,
    HypervisorError,
    SnapshotAmbiguous,
    SnapshotNotFound,
    VpsNotReady,
)
from vpsnap.drivers import qcow2

StrPath = str | os.PathLike[str]

# qemu-img/qemu-io print these when another process (normally the running VM) holds the image's
# lock. Both come from QEMU's file-posix driver and have been stable for years.
_LOCK_MARKERS = ('Failed to get "write" lock', 'Failed to get shared "write" lock')
_LOCK_HINT = "Is another process using the image"
_PATTERN_MISMATCH = "Pattern verification failed"
_MAX_DETAIL_CHARS = 2000
# Conditions of the image itself that no retry changes (QEMU's block layer messages).
_NOT_QCOW2 = "Image is not in qcow2 format"
_UNUSABLE_MARKERS = (
    "Permission denied",
    "requires '",  # "'file' driver requires 'x' to be a regular file"
    "is marked corrupt",
    "Image is corrupt",
    "No such file or directory",
)
DEFAULT_LABEL = "the disk image"

_PR_SET_PDEATHSIG = 1  # linux/prctl.h
# Loaded here, in the parent: the child between fork and exec must not dlopen anything.
_LIBC = ctypes.CDLL(None, use_errno=True)


def _die_with(parent: int) -> None:
    """Runs in the child before exec: the kernel SIGKILLs it if vpsnap dies first.

    A ``qemu-img`` left running by a killed server would go on writing (and hold the image's
    lock) after the restarted server re-ran the job, and create a snapshot nobody records.
    Killed instead, it leaves a consistent image (qcow2 commits a snapshot by writing its
    table last) that the re-run finds with or without the snapshot, and knows why (its write
    intent). Linux only, like vpsnap.

    Only the fallback when ``setpriv`` cannot do it (``_death_launcher``): a ``preexec_fn``
    makes CPython ``fork()`` the whole server instead of ``vfork()``, 10-30 ms per call.
    """
    _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:
        # vpsnap died between fork and prctl: nobody is left to want the result.
        os._exit(1)


# Run by /bin/sh between setpriv (which has set the death signal) and the tool: the same check
# as _die_with's, so a vpsnap that died before the death signal was set starts nothing. $1 is
# vpsnap's pid; exec keeps the pid, the process group and the death signal (PR_SET_PDEATHSIG
# survives execve of a binary that is not set-user-id).
_PARENT_CHECK = '[ "$PPID" = "$1" ] || exit 125; shift; exec "$@"'
_LAUNCH_PREFIX = ("--pdeathsig", "KILL", "--", "/bin/sh", "-c", _PARENT_CHECK, "sh")
# What sh answers when its exec of the tool fails: not found, not executable.
_EXEC_NOT_FOUND = 127
_EXEC_NOT_EXECUTABLE = 126


class _Launcher:
    """How this process starts a tool so that the tool dies with it (``_die_with``'s why).

    Preferred: ``setpriv --pdeathsig KILL -- /bin/sh -c CHECK sh <pid> tool args`` (util-linux
    2.33+). Without a ``preexec_fn`` CPython starts the child with ``vfork()``, whose cost does
    not grow with the server's memory, where ``fork()`` copies the page tables of a 100-300 MB
    process (measured 9-28 ms per spawn against 2.5-4 ms; docs/performance.md, "The job
    path"). Two extra execs (setpriv, dash) cost well under a millisecond each.

    Fallback: the ``preexec_fn`` above, when ``setpriv`` is missing or too old to know
    ``--pdeathsig``. Probed once per process, on first use, in a thread.
    """

    def __init__(self) -> None:
        self._prefix: tuple[str, ...] | None = None
        self._probed = False

    async def prefix(self) -> tuple[str, ...] | None:
        """The argv before ``<pid> tool args``, or None for the ``preexec_fn`` fallback."""
        if not self._probed:
            self._prefix = await asyncio.to_thread(_probe_setpriv)
            self._probed = True
        return self._prefix


def _probe_setpriv() -> tuple[str, ...] | None:
    """``setpriv`` with the death-signal launch, when it runs ``true`` through it."""
    found = shutil.which("setpriv")
    if found is None:
        return None
    prefix = (found, *_LAUNCH_PREFIX)
    try:
        done = subprocess.run(  # noqa: S603 - fixed arguments, no shell input
            [*prefix, str(os.getpid()), "true"],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return prefix if done.returncode == 0 else None


_LAUNCHER = _Launcher()


@dataclass(frozen=True, slots=True)
class DiskSnapshotInfo:
    """One internal snapshot of one image, as ``qemu-img info`` reports it."""

    id: str
    name: str
    vm_state_size: int
    created_at: datetime


@dataclass(frozen=True, slots=True)
class ImageInfo:
    format: str
    virtual_size: int
    # qemu-img leaves out actual-size when the protocol cannot tell (e.g. some network storage).
    actual_size: int | None
    snapshots: tuple[DiskSnapshotInfo, ...]

    def snapshots_named(self, name: str) -> tuple[DiskSnapshotInfo, ...]:
        """Snapshots whose name is exactly ``name`` (qcow2 allows more than one)."""
        return tuple(s for s in self.snapshots if s.name == name)


@dataclass(frozen=True, slots=True)
class _Result:
    returncode: int
    stdout: str
    stderr: str


class QemuImg:
    """Runs ``qemu-img`` / ``qemu-io`` as child processes of the event loop, with a timeout.

    Snapshot commands pin the format to qcow2 (``--image-opts driver=qcow2``) so a raw disk is
    never probed into something else and gets a clear error instead.
    """

    def __init__(
        self, binary: str = "qemu-img", timeout: float = 60.0, qemu_io: str = "qemu-io"
    ) -> None:
        self.binary = binary
        self.qemu_io = qemu_io
        self.timeout = timeout

    # -- qemu-img --------------------------------------------------------------------------

    async def version(self) -> str:
        """The first line of ``qemu-img --version``."""
        result = await self._run_checked(
            self.binary, ["--version"], path=None, action="identify the tool for"
        )
        return result.stdout.strip().splitlines()[0] if result.stdout.strip() else ""

    async def info(self, path: StrPath, *, label: str = DEFAULT_LABEL) -> ImageInfo:
        """Format, sizes and snapshots of an image (``label`` names it in errors).

        A plain qcow2 image is read directly (``vpsnap.drivers.qcow2``: microseconds instead of
        a ~10 ms process); anything else is asked of ``qemu-img info``.
        """
        try:
            image = await asyncio.to_thread(qcow2.read_image, path)
        except qcow2.Qcow2Unreadable:
            return await self.tool_info(path, label=label)
        return ImageInfo(
            format="qcow2",
            virtual_size=image.virtual_size,
            actual_size=image.actual_size,
            snapshots=tuple(
                DiskSnapshotInfo(s.id, s.name, s.vm_state_size, s.created_at)
                for s in image.snapshots
            ),
        )

    async def tool_info(self, path: StrPath, *, label: str = DEFAULT_LABEL) -> ImageInfo:
        """``qemu-img info``, the authority on every image format."""
        # -U (force-share) lets this read the header while a VM holds the write lock.
        result = await self._run_checked(
            self.binary,
            ["info", "--output=json", "-U", _positional(path)],
            path=path,
            label=label,
            action="read",
        )
        return _parse_info(result.stdout, path, label)

    async def detect_format(self, path: StrPath) -> str:
        return (await self.info(path)).format

    async def create_image(self, path: StrPath, virtual_size_bytes: int) -> None:
        if virtual_size_bytes <= 0:
            raise ValueError("virtual_size_bytes must be positive")
        await self._run_checked(
            self.binary,
            ["create", "-q", "-f", "qcow2", _positional(path), str(virtual_size_bytes)],
            path=None,
            action="create an image for",
        )

    async def create_snapshot(
        self, path: StrPath, name: str, *, label: str = DEFAULT_LABEL
    ) -> None:
        """Create an internal snapshot.

        qcow2 accepts a second snapshot with an existing name; callers check first.
        """
        await self._snapshot_command("-c", name, path, label, f"take snapshot {name} of")

    async def apply_snapshot(self, path: StrPath, name: str, *, label: str = DEFAULT_LABEL) -> None:
        """Revert the image to the one snapshot called ``name``.

        ``qemu-img snapshot -a X`` looks X up as an *id* first and only then as a name (qcow2's
        find_snapshot_by_id_or_name), so "-a 1" reverts to whichever snapshot has id 1 even when
        another one is named "1". The name is therefore resolved to its id here and the id is
        passed: ids are unique per image, and an id match always wins.
        """
        target = _only_snapshot(await self.info(path, label=label), name, label)
        await self._snapshot_command("-a", target.id, path, label, f"roll back to snapshot {name}")

    async def delete_snapshot(
        self, path: StrPath, name: str, *, label: str = DEFAULT_LABEL
    ) -> None:
        """Delete the snapshot called ``name``.

        Unlike apply, ``qemu-img snapshot -d`` matches by name only (checked against QEMU 7.2:
        ``-d 1`` on an image with only id 1 "alpha" fails with "snapshot not found"), so the name
        is unambiguous as long as it is unique on the image, which is checked here because with
        duplicates qemu-img silently deletes just the first one.
        """
        _only_snapshot(await self.info(path, label=label), name, label)
        await self._snapshot_command("-d", name, path, label, f"delete snapshot {name} from")

    # -- qemu-io ---------------------------------------------------------------------------

    async def write_pattern(
        self,
        path: StrPath,
        offset: int,
        length: int,
        pattern_byte: int,
        *,
        image_format: str = "qcow2",
    ) -> None:
        """Fill ``length`` bytes at ``offset`` of the guest-visible disk with ``pattern_byte``."""
        _check_range(offset, length, pattern_byte)
        result = await self._run_checked(
            self.qemu_io,
            [
                "-f",
                image_format,
                "-c",
                f"write -P 0x{pattern_byte:02x} {offset} {length}",
                _positional(path),
            ],
            path=path,
            action="write data to",
        )
        # Older qemu-io exited 0 even when the command failed, so trust only its report line.
        if f"wrote {length}/{length} bytes" not in result.stdout:
            raise HypervisorError(
                "The write to the disk image was not confirmed.",
                log_detail=f"qemu-io did not confirm the write to {os.fspath(path)}: "
                f"{_trim(result.stderr or result.stdout)}",
            )

    async def read_matches(
        self,
        path: StrPath,
        offset: int,
        length: int,
        pattern_byte: int,
        *,
        image_format: str = "qcow2",
    ) -> bool:
        """Whether every byte in the range equals ``pattern_byte``.

        On a mismatch qemu-io 7.2 prints "Pattern verification failed at offset ..." on stdout
        and exits 1, which is also its exit status for real errors, so the message decides.
        """
        _check_range(offset, length, pattern_byte)
        result = await self._run(
            self.qemu_io,
            [
                "-f",
                image_format,
                "-c",
                f"read -P 0x{pattern_byte:02x} {offset} {length}",
                _positional(path),
            ],
        )
        if _PATTERN_MISMATCH in result.stdout or _PATTERN_MISMATCH in result.stderr:
            return False
        if result.returncode != 0:
            await _raise_for_failure(
                self.qemu_io,
                ["read"],
                result,
                path=path,
                label=DEFAULT_LABEL,
                action="read data from",
            )
        if f"read {length}/{length} bytes" not in result.stdout:
            raise HypervisorError(
                "The read of the disk image was not confirmed.",
                log_detail=f"qemu-io did not confirm the read of {os.fspath(path)}: "
                f"{_trim(result.stderr or result.stdout)}",
            )
        return True

    # -- plumbing --------------------------------------------------------------------------

    async def _snapshot_command(
        self, flag: str, argument: str, path: StrPath, label: str, action: str
    ) -> None:
        await self._run_checked(
            self.binary,
            ["snapshot", "-q", "--image-opts", flag, argument, _qcow2_image_opts(path)],
            path=path,
            label=label,
            action=action,
        )

    async def _run_checked(
        self,
        program: str,
        args: list[str],
        *,
        path: StrPath | None,
        action: str,
        label: str = DEFAULT_LABEL,
    ) -> _Result:
        """Run ``program``; a failure raises a domain error saying it could not ``action``
        ``label`` (e.g. "take snapshot x of" "disk 1 of web-1")."""
        result = await self._run(program, args, label=label, action=action)
        if result.returncode != 0:
            await _raise_for_failure(program, args, result, path=path, label=label, action=action)
        return result

    async def _run(
        self,
        program: str,
        args: list[str],
        *,
        label: str = DEFAULT_LABEL,
        action: str = "use",
    ) -> _Result:
        prefix = await _LAUNCHER.prefix()
        try:
            if prefix is not None:
                process = await asyncio.create_subprocess_exec(
                    *prefix,
                    str(os.getpid()),
                    program,
                    *args,
                    stdin=asyncio.subprocess.DEVNULL,
                    stdout=asyncio.subprocess.PIPE,
                    stderr=asyncio.subprocess.PIPE,
                    # Own process group, so a timeout also kills anything the program started
                    # (a wrapper script's children would otherwise keep the pipes open).
                    start_new_session=True,
                )
            else:
                process = await asyncio.create_subprocess_exec(
                    program,
                    *args,
                    stdin=asyncio.subprocess.DEVNULL,
                    stdout=asyncio.subprocess.PIPE,
                    stderr=asyncio.subprocess.PIPE,
                    start_new_session=True,
                    preexec_fn=functools.partial(_die_with, os.getpid()),
                )
        except FileNotFoundError as exc:
            raise _not_installed(program) from exc
        except PermissionError as exc:
            raise _not_executable(program, exc) from exc

        try:
            async with asyncio.timeout(self.timeout):
                stdout, stderr = await process.communicate()
        except TimeoutError:
            await _kill(process)
            raise HypervisorError(
                f"The hypervisor did not {action} {label} within {self.timeout:g}s; the "
                "attempt was stopped.",
                log_detail=f"{_tool_name(program)} timed out after {self.timeout:g}s and was "
                f"killed (arguments: {' '.join(args)})",
            ) from None
        except BaseException:
            # Cancelled: do not leave a qemu-img running on its own against the image.
            await _kill(process)
            raise
        assert process.returncode is not None  # communicate() waited for the exit
        if prefix is not None and process.returncode in (_EXEC_NOT_FOUND, _EXEC_NOT_EXECUTABLE):
            # sh could not exec the tool (or the tool itself exited so): which one, only a look
            # at the file says, in a thread (a failure path; it may touch a slow filesystem).
            await _raise_if_unrunnable(program)
        return _Result(
            returncode=process.returncode,
            stdout=stdout.decode("utf-8", errors="replace"),
            stderr=stderr.decode("utf-8", errors="replace"),
        )


def _not_installed(program: str) -> HypervisorError:
    return HypervisorError(
        "The hypervisor's disk tool is not installed on this host.",
        log_detail=f"{_tool_name(program)} not found at {program}",
    )


def _not_executable(program: str, reason: object) -> HypervisorError:
    return HypervisorError(
        "The hypervisor's disk tool cannot be run on this host.",
        log_detail=f"{_tool_name(program)} at {program} is not executable: {reason}",
    )


def _runnable(program: str) -> str | None:
    """None when ``program`` can be executed; else why not (``"missing"``, ``"denied"``)."""
    if os.sep not in program:
        return None if shutil.which(program) else "missing"
    if not os.path.exists(program):  # noqa: PTH110 - a str path, as exec takes it
        return "missing"
    return None if os.access(program, os.X_OK) else "denied"


async def _raise_if_unrunnable(program: str) -> None:
    """The errors a failed exec raised before the launch went through ``setpriv`` and sh."""
    why = await asyncio.to_thread(_runnable, program)
    if why == "missing":
        raise _not_installed(program)
    if why == "denied":
        raise _not_executable(program, "permission denied")


async def _kill(process: asyncio.subprocess.Process) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    # Reaps the child and lets asyncio close the pipe transports (no ResourceWarning).
    await process.wait()


async def _raise_for_failure(
    program: str,
    args: list[str],
    result: _Result,
    *,
    path: StrPath | None,
    label: str,
    action: str,
) -> None:
    output = result.stderr.strip() or result.stdout.strip()
    log_detail = (
        f"{_tool_name(program)} {' '.join(args)} failed (exit {result.returncode}): "
        f"{_trim(output) or 'no output'}"
    )
    error: DomainError
    if any(marker in output for marker in _LOCK_MARKERS) or _LOCK_HINT in output:
        error = VpsNotReady(
            f"{_capitalised(label)} is in use by another process (most likely the running VM). "
            "Stop the VM before snapshotting or restoring it.",
            log_detail=log_detail,
        )
    elif path is not None and not await asyncio.to_thread(Path(path).exists):
        error = DiskUnusable(
            f"{_capitalised(label)} is missing on the host: its image file does not exist.",
            log_detail=log_detail,
        )
    elif _NOT_QCOW2 in output:
        error = DiskUnusable(
            f"{_capitalised(label)} is not a qcow2 image; internal snapshots need qcow2.",
            log_detail=log_detail,
        )
    elif any(marker in output for marker in _UNUSABLE_MARKERS):
        error = DiskUnusable(
            f"{_capitalised(label)} cannot be opened by the hypervisor (unreadable or damaged "
            "image); the provider must check it.",
            log_detail=log_detail,
        )
    else:
        error = HypervisorError(
            f"The hypervisor could not {action} {label}.", log_detail=log_detail
        )
    raise error


def _capitalised(label: str) -> str:
    return label[:1].upper() + label[1:]


def _tool_name(program: str) -> str:
    return Path(program).name or program


def _trim(text: str) -> str:
    text = text.strip()
    if len(text) > _MAX_DETAIL_CHARS:
        return text[:_MAX_DETAIL_CHARS] + "…"
    return text


def _positional(path: StrPath) -> str:
    # A relative path starting with "-" would be read as an option.
    text = os.fspath(path)
    return f"./{text}" if text.startswith("-") else text


def _qcow2_image_opts(path: StrPath) -> str:
    # In QEMU option strings a literal comma is written as ",,".
    filename = os.fspath(path).replace(",", ",,")
    return f"driver=qcow2,file.driver=file,file.filename={filename}"


def _check_range(offset: int, length: int, pattern_byte: int) -> None:
    if offset < 0 or length <= 0:
        raise ValueError("offset must be >= 0 and length > 0")
    if not 0 <= pattern_byte <= 0xFF:
        raise ValueError("pattern_byte must be 0..255")


def _only_snapshot(info: ImageInfo, name: str, label: str) -> DiskSnapshotInfo:
    matches = info.snapshots_named(name)
    if not matches:
        raise SnapshotNotFound(f"Snapshot {name} does not exist on {label}.")
    if len(matches) > 1:
        ids = ", ".join(s.id for s in matches)
        raise SnapshotAmbiguous(
            f"{_capitalised(label)} has {len(matches)} snapshots named {name!r}; vpsnap will "
            "not guess which one is meant. The provider must rename or delete the extra ones.",
            log_detail=f"{label}: snapshots named {name!r} have the ids {ids}",
        )
    return matches[0]


def _parse_info(stdout: str, path: StrPath, label: str) -> ImageInfo:
    try:
        return _image_info_from_json(json.loads(stdout))
    except (ValueError, TypeError, KeyError) as exc:
        raise HypervisorError(
            f"The hypervisor's description of {label} could not be read.",
            log_detail=f"Could not understand qemu-img info output for {os.fspath(path)}: {exc}",
        ) from exc


def _image_info_from_json(raw: Any) -> ImageInfo:
    if not isinstance(raw, dict):
        raise TypeError("top level is not an object")
    actual = raw.get("actual-size")
    return ImageInfo(
        format=_str(raw, "format"),
        virtual_size=_int(raw, "virtual-size"),
        actual_size=int(actual) if actual is not None else None,
        snapshots=tuple(_parse_snapshot(item) for item in raw.get("snapshots", [])),
    )


def _parse_snapshot(item: Any) -> DiskSnapshotInfo:
    if not isinstance(item, dict):
        raise TypeError("snapshot entry is not an object")
    snapshot_id = _str(item, "id")
    if not snapshot_id:
        raise ValueError("snapshot with an empty id")
    created_at = datetime.fromtimestamp(_int(item, "date-sec"), UTC) + timedelta(
        microseconds=_int(item, "date-nsec") // 1000
    )
    return DiskSnapshotInfo(
        id=snapshot_id,
        name=_str(item, "name"),
        vm_state_size=_int(item, "vm-state-size"),
        created_at=created_at,
    )


def _str(obj: dict[str, Any], key: str) -> str:
    value = obj[key]
    if not isinstance(value, str):
        raise TypeError(f"{key} is not a string")
    return value


def _int(obj: dict[str, Any], key: str) -> int:
    value = obj[key]
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{key} is not an integer")
    return value
