"""Ownership checks shared by the use cases: another account's things do not exist."""

from __future__ import annotations

from vpsnap.domain.auth import Principal
from vpsnap.domain.errors import VpsNotFound
from vpsnap.domain.ids import is_valid_id
from vpsnap.domain.model import Vps
from vpsnap.domain.ports import Transaction


async def owned_vps(
    tx: Transaction, principal: Principal, vps_id: str, *, lock: bool = False
) -> Vps:
    # An id of the wrong shape cannot exist: answered without asking the store (which is
    # never the validator: PostgreSQL refuses a NUL in a string with an error of its own).
    vps = await tx.get_vps(vps_id, lock=lock) if is_valid_id("vps", vps_id) else None
    if vps is None or vps.account_id != principal.account_id:
        raise VpsNotFound(f"No VPS with id {vps_id!r} in this account.")
    return vps
