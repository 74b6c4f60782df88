"""Disk files as vpsnap registers them: one file belongs to one VPS, once.

Invariant (docs/how-snapshots-work.md, "One disk, one VPS"): two names of one file are one
disk. A disk is identified on its node by its real path (symlinks and ``..`` resolved) and, when
the file can be read where it is registered, by its (device, inode) pair, which also unmasks
hard links. Two VPSes on one file would write two snapshots of one name into one image, and
each could roll back the other's data.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class DiskFile:
    """One disk of a VPS as the store indexes it.

    ``path`` is the real path; ``file_id`` is ``"<st_dev>:<st_ino>"``, or None when the file
    is not readable from where it was registered (a remote libvirt host's disk).
    """

    path: str
    file_id: str | None = None

    @property
    def path_key(self) -> str:
        """SHA-256 (hex) of the path: what the store's uniqueness index holds (a path may be
        longer than a database index entry)."""
        return hashlib.sha256(self.path.encode("utf-8", "surrogateescape")).hexdigest()

    def same_file(self, other: DiskFile) -> bool:
        return self.path == other.path or (
            self.file_id is not None and self.file_id == other.file_id
        )


@dataclass(frozen=True, slots=True)
class DiskOwner:
    """Who a registered disk file belongs to (for the operator's error message)."""

    disk: DiskFile
    vps_id: str
    vps_name: str
    account_name: str


def repeated(files: Iterable[tuple[str, DiskFile]]) -> tuple[str, str] | None:
    """The first two names (as given) of one file among ``(given name, file)`` pairs."""
    seen: list[tuple[str, DiskFile]] = []
    for given, file in files:
        for earlier_given, earlier in seen:
            if file.same_file(earlier):
                return earlier_given, given
        seen.append((given, file))
    return None
