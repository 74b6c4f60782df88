"""Files and directories only vpsnap's own user may read: 0600 files in 0700 directories,
whatever the process's umask.

Invariant (docs/how-snapshots-work.md, "Files on the host"): files holding secrets or tenants'
data (the SQLite database with its -wal and -shm, the demo's keys, the demo's disk images) are
created 0600 in 0700 directories, and an existing one found wider is narrowed at start-up. Modes
are set explicitly (``fchmod`` right after creation) instead of relying on the umask; a file
made by another program (SQLite, qemu-img) is created empty here first, because both keep the
mode of a file that exists (SQLite gives its -wal and -shm the database file's mode).
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import structlog

_log = structlog.get_logger(__name__)

FILE_MODE = 0o600
DIR_MODE = 0o700


def _narrow(path: Path, wanted: int) -> None:
    """Set ``path``'s mode to ``wanted`` if it is ours and differs (another user's file is
    left alone: chmod would fail, and it is not ours to change)."""
    info = path.stat()
    current = stat.S_IMODE(info.st_mode)
    if current != wanted and info.st_uid == os.geteuid():
        path.chmod(wanted)
        _log.warning(
            "permissions_narrowed", path=str(path), mode_was=oct(current), mode=oct(wanted)
        )


def private_dir(path: Path) -> None:
    """Create ``path`` (and missing parents) as a 0700 directory, or narrow it to 0700."""
    path.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
    _narrow(path, DIR_MODE)


def private_file(path: Path, *, create: bool = True) -> None:
    """Make ``path`` a 0600 file: created empty if missing (when ``create``), narrowed if wider.
    Never truncates an existing file."""
    if path.exists():
        _narrow(path, FILE_MODE)
        return
    if not create:
        return
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
    except FileExistsError:  # made meanwhile by someone else: as for an existing file
        _narrow(path, FILE_MODE)
        return
    try:
        os.fchmod(fd, FILE_MODE)  # the umask may have taken bits off (never added any)
    finally:
        os.close(fd)


def write_private(path: Path, data: bytes) -> None:
    """Replace ``path``'s content with ``data``, the file being 0600 before a byte is written."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE)
    try:
        os.fchmod(fd, FILE_MODE)
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
    finally:
        os.close(fd)
