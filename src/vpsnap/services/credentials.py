"""API keys: issue (shown once), store only a hash, authenticate, revoke."""

from __future__ import annotations

import hashlib
import secrets
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import structlog

from vpsnap.domain.audit import Actor, AuditAction, Target
from vpsnap.domain.auth import Principal, Scope
from vpsnap.domain.clock import Clock
from vpsnap.domain.errors import NotFound, Unauthorized
from vpsnap.domain.ids import new_id
from vpsnap.domain.model import ApiKey
from vpsnap.domain.ports import Store
from vpsnap.events.audit import AuditTrail, operator_actor

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
LAST_USE_RESOLUTION = timedelta(minutes=1)
"""``last_used_at`` is exact to this: a key is written at most once per this interval."""

_log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class KeyListing:
    """A key as ``vpsnap admin key list`` shows it (never its secret, which is not stored)."""

    key: ApiKey
    account_name: str


@dataclass(frozen=True, slots=True)
class CredentialService:
    """Issues and checks API keys.

    Successful lookups are cached for ``cache_seconds`` (default 5 s) because every request
    authenticates: a revocation made by another process (``vpsnap admin key revoke``) takes
    effect within that time; one made in this process, and any expiry, at once.

    Each key's ``last_used_at`` is written at most once per ``LAST_USE_RESOLUTION`` per
    process (and the write itself skips a row another process wrote within it), so recording
    use costs one small write per key and minute, not one per request.
    """

    store: Store
    clock: Clock
    cache_seconds: float = 5.0
    _cache: dict[str, _Cached] = field(default_factory=dict)
    _use_recorded: dict[str, datetime] = field(default_factory=dict)

    async def issue(
        self,
        account_name: str,
        scopes: frozenset[Scope],
        expires_in: timedelta | None = None,
        *,
        name: str | None = None,
        actor: Actor | None = None,
    ) -> IssuedKey:
        """Issue a key (audited as ``key.create`` by ``actor``, default: the OS user)."""
        actor = actor or operator_actor()
        audit = AuditTrail(self.store, self.clock)
        async with audit.refusals(actor, AuditAction.KEY_CREATE, account_id=None):
            return await self._issue(account_name, scopes, expires_in, name, actor)

    async def _issue(
        self,
        account_name: str,
        scopes: frozenset[Scope],
        expires_in: timedelta | None,
        name: str | None,
        actor: Actor,
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
                name=name,
            )
            await tx.add_api_key(key, hash_secret(secret))
            await AuditTrail(self.store, self.clock).record(
                tx,
                actor,
                AuditAction.KEY_CREATE,
                account_id=account.id,
                target=Target("key", key.id),
                details={
                    "scopes": sorted(key.scopes),
                    "expiresAt": key.expires_at.isoformat() if key.expires_at else None,
                },
            )
        return IssuedKey(key=key, secret=secret)

    # -- the dashboard's API keys page (issue 11): an owner manages their own account's keys --

    async def issue_for_account(
        self,
        account_id: str,
        scopes: frozenset[Scope],
        expires_in: timedelta | None = None,
        *,
        actor: Actor | None = None,
    ) -> IssuedKey:
        """Like ``issue``, for an account known by id (the signed-in owner's, the ``actor``)."""
        async with self.store.transaction(read_only=True) as tx:
            account = await tx.get_account(account_id)
        if account is None:
            raise NotFound(f"No account with id {account_id!r}.")
        return await self.issue(account.name, scopes, expires_in, actor=actor)

    async def list_for_account(self, account_id: str) -> list[ApiKey]:
        """The account's keys, newest first, revoked and expired ones included."""
        async with self.store.transaction(read_only=True) as tx:
            return list(reversed(await tx.list_api_keys(account_id)))

    async def revoke_for_account(
        self, account_id: str, key_id: str, *, actor: Actor | None = None
    ) -> None:
        """Revoke one of the account's keys; another account's key is ``NotFound`` (as a
        missing one), so nobody learns which key ids exist."""
        async with self.store.transaction(read_only=True) as tx:
            key = await tx.get_api_key(key_id)
        if key is None or key.account_id != account_id:
            raise NotFound(f"No active API key with id {key_id!r}.")
        await self.revoke(key_id, actor=actor)

    async def list_keys(self, account_name: str | None = None) -> list[KeyListing]:
        """Every key, or those of one account (``NotFound`` when there is no such account),
        oldest first; revoked and expired keys included (their dates say so)."""
        async with self.store.transaction(read_only=True) as tx:
            names = {a.id: a.name for a in await tx.list_accounts()}
            account_id = None
            if account_name is not None:
                account = await tx.find_account_by_name(account_name)
                if account is None:
                    raise NotFound(f"No account named {account_name!r}.")
                account_id = account.id
            keys = await tx.list_api_keys(account_id)
        return [KeyListing(k, names.get(k.account_id, "?")) for k in keys]

    async def revoke(self, key_id: str, *, actor: Actor | None = None) -> None:
        """Revoke a key (audited as ``key.revoke`` by ``actor``, default: the OS user)."""
        actor = actor or operator_actor()
        audit = AuditTrail(self.store, self.clock)
        target = Target("key", key_id)
        async with (
            audit.refusals(actor, AuditAction.KEY_REVOKE, account_id=None, target=target),
            self.store.transaction() as tx,
        ):
            if not await tx.revoke_api_key(key_id, self.clock.now()):
                raise NotFound(f"No active API key with id {key_id!r}.")
            await audit.record(
                tx,
                actor,
                AuditAction.KEY_REVOKE,
                account_id=await tx.api_key_account(key_id),
                target=target,
            )
        self.forget(key_id)

    def forget(self, key_id: str) -> None:
        """Drop ``key_id`` from this process's cache: it is looked up again on its next use
        (called when another process revoked it, through PostgreSQL NOTIFY)."""
        for digest, cached in list(self._cache.items()):
            if cached.principal.key_id == key_id:
                del self._cache[digest]

    def recently_verified(self, secret: str) -> Principal | None:
        """The principal of ``secret`` if it was verified within ``cache_seconds`` (and has
        not expired since), without a lookup; None otherwise (unknown, or not checked lately).
        The edge asks this first: only a secret that is not answered here costs a lookup, and
        that lookup is counted against the client address's budget."""
        cached = self._cache.get(hash_secret(secret))
        if (
            cached is not None
            and time.monotonic() - cached.cached_at < self.cache_seconds
            and (cached.expires_at is None or self.clock.now() < cached.expires_at)
        ):
            # Its last use is recorded by the lookups: one at least every cache_seconds while
            # the key is in use, more often than the minute that last use is kept to.
            return cached.principal
        return None

    async def authenticate(self, secret: str) -> Principal:
        """The principal of a valid key; raises ``Unauthorized`` for anything else.

        Only keys that authenticate are cached (bounded, ``_CACHE_LIMIT``): a made-up key is
        never remembered, so a flood of them cannot grow memory.
        """
        recent = self.recently_verified(secret)
        if recent is not None:
            return recent
        digest = hash_secret(secret)
        now = self.clock.now()
        async with self.store.transaction(read_only=True, small=True) as tx:
            key = await tx.find_api_key_by_hash(digest)  # by its unique index
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
        await self._record_use(key.id, now)
        return principal

    async def _record_use(self, key_id: str | None, now: datetime) -> None:
        if key_id is None:
            return
        recorded = self._use_recorded.get(key_id)
        if recorded is not None and now - recorded < LAST_USE_RESOLUTION:
            return
        if len(self._use_recorded) >= _CACHE_LIMIT:
            self._use_recorded.clear()
        self._use_recorded[key_id] = now
        try:
            async with self.store.transaction() as tx:
                await tx.record_key_use(key_id, now, not_since=now - LAST_USE_RESOLUTION)
        except Exception as exc:  # bookkeeping must never fail the request it counts
            _log.warning("key_use_not_recorded", key_id=key_id, error=repr(exc))
