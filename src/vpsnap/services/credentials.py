"""API keys: issue (shown once), store only a hash, authenticate, revoke."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import timedelta

from vpsnap.domain.auth import Principal, Scope
from vpsnap.domain.clock import Clock
from vpsnap.domain.errors import NotFound, Unauthorized
from vpsnap.domain.ids import new_id
from vpsnap.domain.model import ApiKey
from vpsnap.domain.ports import Store

KEY_PREFIX = "vpsnap_"


def hash_secret(secret: str) -> str:
    # Keys carry 256 random bits, so a fast hash is enough: there is nothing to brute-force.
    # (Passwords, which are guessable, get argon2 in the dashboard.)
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


@dataclass(frozen=True, slots=True)
class IssuedKey:
    key: ApiKey
    secret: str


@dataclass(frozen=True, slots=True)
class CredentialService:
    store: Store
    clock: Clock

    async def issue(
        self, account_name: str, scopes: frozenset[Scope], expires_in: timedelta | None = None
    ) -> IssuedKey:
        now = self.clock.now()
        secret = KEY_PREFIX + secrets.token_urlsafe(32)
        async with self.store.transaction() as tx:
            account = await tx.find_account_by_name(account_name)
            if account is None:
                raise NotFound(f"No account named {account_name!r}.")
            key = ApiKey(
                id=new_id("key"),
                account_id=account.id,
                scopes=frozenset(s.value for s in scopes),
                created_at=now,
                expires_at=now + expires_in if expires_in is not None else None,
                revoked_at=None,
            )
            await tx.add_api_key(key, hash_secret(secret))
        return IssuedKey(key=key, secret=secret)

    async def revoke(self, key_id: str) -> None:
        async with self.store.transaction() as tx:
            if not await tx.revoke_api_key(key_id, self.clock.now()):
                raise NotFound(f"No active API key with id {key_id!r}.")

    async def authenticate(self, secret: str) -> Principal:
        async with self.store.transaction(read_only=True) as tx:
            key = await tx.find_api_key_by_hash(hash_secret(secret))
        if key is None or not key.is_usable(self.clock.now()):
            # One answer for unknown, expired and revoked keys: nothing to learn by probing.
            raise Unauthorized("The API key is invalid, expired or revoked.")
        return Principal(
            account_id=key.account_id,
            scopes=frozenset(Scope(s) for s in key.scopes),
            key_id=key.id,
        )
