"""Ownership checks shared by the use cases: another account's things do not exist."""

from __future__ import annotations

from vpsnap.domain.auth import Principal
from vpsnap.domain.errors import VpsNotFound
from vpsnap.domain.ids import is_valid_id
from vpsnap.domain.model import Snapshot, Vps
from vpsnap.domain.ports import Transaction


async def owned_vps(
    tx: Transaction, principal: Principal, vps_id: str, *, lock: bool = False
) -> Vps:
    # An id of the wrong shape cannot exist: answered without asking the store (which is
    # never the validator: PostgreSQL refuses a NUL in a string with an error of its own).
    vps = await tx.get_vps(vps_id, lock=lock) if is_valid_id("vps", vps_id) else None
    return _owned(vps, principal, vps_id)


async def owned_vps_with_snapshots(
    tx: Transaction, principal: Principal, vps_id: str
) -> tuple[Vps, list[Snapshot]]:
    """``owned_vps`` and the VPS's snapshots (oldest first), read in one statement."""
    found = await tx.get_vps_with_snapshots(vps_id) if is_valid_id("vps", vps_id) else None
    vps = _owned(found[0] if found else None, principal, vps_id)
    return vps, found[1] if found else []


def _owned(vps: Vps | None, principal: Principal, vps_id: str) -> Vps:
    if vps is None or vps.account_id != principal.account_id:
        raise VpsNotFound(f"No VPS with id {vps_id!r} in this account.")
    return vps
