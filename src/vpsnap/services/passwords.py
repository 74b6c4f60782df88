"""Password hashing for dashboard users: argon2id through ``argon2-cffi``.

Hashing is deliberately slow (tens of milliseconds and 64 MiB, RFC 9106's second recommended
profile, argon2-cffi's default), so it runs in a worker thread, never on the event loop.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError


@dataclass(frozen=True, slots=True)
class Verified:
    ok: bool
    new_hash: str | None = None
    """Set when the password was right but its hash used old parameters: store this one."""


@dataclass(slots=True)
class Passwords:
    hasher: PasswordHasher = field(default_factory=PasswordHasher)  # argon2id by default
    _decoy: str | None = None

    async def hash(self, password: str) -> str:
        return await asyncio.to_thread(self.hasher.hash, password)

    async def verify(self, stored_hash: str, password: str) -> Verified:
        return await asyncio.to_thread(self._verify, stored_hash, password)

    def _verify(self, stored_hash: str, password: str) -> Verified:
        try:
            self.hasher.verify(stored_hash, password)
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return Verified(ok=False)
        if self.hasher.check_needs_rehash(stored_hash):
            return Verified(ok=True, new_hash=self.hasher.hash(password))
        return Verified(ok=True)

    async def spend_like_verify(self, password: str) -> None:
        """Cost what a real verification costs, for an email that has no user: a sign-in with
        an unknown address must not answer measurably faster than one with a wrong password."""
        if self._decoy is None:
            self._decoy = await self.hash("decoy password that matches nothing")
        await self.verify(self._decoy, password)
