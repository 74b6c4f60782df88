"""API keys: issue (shown once), store only a hash, authenticate, revoke."""

from __future__ import annotations

import hashlib
import secrets
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta

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
class _Cached:
    principal: Principal
    expires_at: datetime | None
    cached_at: float


_CACHE_LIMIT = 10_000


@dataclass(frozen=True, slots=True)
class CredentialService:
    """Issues and checks API keys.

    Successful lookups are cached for ``cache_seconds`` (default 5 s) because every request
    authenticates: a revocation made by another process (``vpsnap admin key revoke``) takes
    effect within that time; one made in this process, and any expiry, at once.
    """

    store: Store
    clock: Clock
    cache_seconds: float = 5.0
    _cache: dict[str, _Cached] = field(default_factory=dict)

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
        self.forget(key_id)

    def forget(self, key_id: str) -> None:
        """Drop ``key_id`` from this process's cache: it is looked up again on its next use
        (called when another process revoked it, through PostgreSQL NOTIFY)."""
        for digest, cached in list(self._cache.items()):
            if cached.principal.key_id == key_id:
                del self._cache[digest]

    async def authenticate(self, secret: str) -> Principal:
        digest = hash_secret(secret)
        now = self.clock.now()
        cached = self._cache.get(digest)
        if (
            cached is not None
            and time.monotonic() - cached.cached_at < self.cache_seconds
            and (cached.expires_at is None or now < cached.expires_at)
        ):
            return cached.principal
        async with self.store.transaction(read_only=True) as tx:
            key = await tx.find_api_key_by_hash(digest)
        if key is None or not key.is_usable(now):
            self._cache.pop(digest, None)
            # One answer for unknown, expired and revoked keys: nothing to learn by probing.
            raise Unauthorized("The API key is invalid, expired or revoked.")
        principal = Principal(
            account_id=key.account_id,
            scopes=frozenset(Scope(s) for s in key.scopes),
            key_id=key.id,
        )
        if self.cache_seconds > 0:
            if len(self._cache) >= _CACHE_LIMIT:
                self._cache.clear()
            self._cache[digest] = _Cached(principal, key.expires_at, time.monotonic())
        return principal
