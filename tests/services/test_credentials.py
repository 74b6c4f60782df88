"""CredentialService (API keys), scope parsing and the principal's scope check."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest

from tests.support import ManualClock
from vpsnap.domain.auth import Principal, Scope, parse_scopes
from vpsnap.domain.errors import NotFound, Unauthorized
from vpsnap.services.credentials import CredentialService
from vpsnap.store.sql import SqlStore

from .conftest import World

SCOPES = frozenset({Scope.READ_VM, Scope.BACKUP_VM})


@pytest.fixture
def credentials(world: World) -> CredentialService:
    return world.runtime.services.credentials


async def test_issued_key_authenticates_as_its_account_with_its_scopes(
    world: World, credentials: CredentialService
) -> None:
    issued = await credentials.issue("alice", SCOPES)

    assert issued.secret.startswith("vpsnap_")
    assert issued.key.account_id == world.account.id
    assert issued.key.scopes == {"read:vm", "backup:vm"}
    assert issued.key.expires_at is None
    assert await credentials.authenticate(issued.secret) == Principal(
        world.account.id, SCOPES, key_id=issued.key.id
    )
    # Cached or not, the same answer.
    assert await credentials.authenticate(issued.secret) == Principal(
        world.account.id, SCOPES, key_id=issued.key.id
    )


async def test_secret_is_never_stored(world: World, credentials: CredentialService) -> None:
    issued = await credentials.issue("alice", SCOPES)
    async with world.store.transaction(read_only=True) as tx:
        rows = (await tx.conn.exec_driver_sql("SELECT * FROM api_keys")).all()
    assert rows
    assert all(issued.secret not in str(value) for row in rows for value in row)


async def test_issue_for_an_unknown_account_is_not_found(credentials: CredentialService) -> None:
    with pytest.raises(NotFound):
        await credentials.issue("nobody", SCOPES)


@pytest.mark.parametrize("wrong", ["", "vpsnap_", "nonsense", "Bearer x"])
async def test_wrong_secret_is_unauthorized(credentials: CredentialService, wrong: str) -> None:
    await credentials.issue("alice", SCOPES)
    with pytest.raises(Unauthorized):
        await credentials.authenticate(wrong)


async def test_secret_with_one_changed_character_is_unauthorized(
    credentials: CredentialService,
) -> None:
    issued = await credentials.issue("alice", SCOPES)
    await credentials.authenticate(issued.secret)
    last = issued.secret[-1]
    tampered = issued.secret[:-1] + ("A" if last != "A" else "B")
    with pytest.raises(Unauthorized):
        await credentials.authenticate(tampered)


async def test_expired_key_is_refused_even_while_cached(
    store: SqlStore, world: World, clock: ManualClock
) -> None:
    issuer = CredentialService(store, clock, cache_seconds=60)
    checker = CredentialService(store, clock, cache_seconds=60)
    issued = await issuer.issue("alice", SCOPES, expires_in=timedelta(hours=1))
    assert issued.key.expires_at == clock.now() + timedelta(hours=1)
    await checker.authenticate(issued.secret)
    # Revoked by "another process": the checker keeps trusting its cache (as documented) ...
    await issuer.revoke(issued.key.id)
    clock.advance(minutes=59, seconds=59)
    assert (await checker.authenticate(issued.secret)).key_id == issued.key.id

    # ... but never past the key's expiry.
    clock.advance(seconds=1)
    with pytest.raises(Unauthorized):
        await checker.authenticate(issued.secret)


async def test_key_expires_at_its_expiry_time(
    credentials: CredentialService, clock: ManualClock
) -> None:
    issued = await credentials.issue("alice", SCOPES, expires_in=timedelta(minutes=5))
    clock.advance(minutes=4, seconds=59)
    await credentials.authenticate(issued.secret)
    clock.advance(seconds=1)
    with pytest.raises(Unauthorized):
        await credentials.authenticate(issued.secret)


async def test_revoked_key_is_refused_at_once_in_this_process(
    credentials: CredentialService,
) -> None:
    issued = await credentials.issue("alice", SCOPES)
    await credentials.authenticate(issued.secret)  # now cached

    await credentials.revoke(issued.key.id)

    with pytest.raises(Unauthorized):
        await credentials.authenticate(issued.secret)


async def test_revocation_elsewhere_applies_at_once_without_a_cache(
    store: SqlStore, world: World, clock: ManualClock
) -> None:
    uncached = CredentialService(store, clock, cache_seconds=0)
    other_process = CredentialService(store, clock)
    issued = await uncached.issue("alice", SCOPES)
    await uncached.authenticate(issued.secret)

    await other_process.revoke(issued.key.id)

    with pytest.raises(Unauthorized):
        await uncached.authenticate(issued.secret)


async def test_revoking_twice_or_an_unknown_key_is_not_found(
    credentials: CredentialService,
) -> None:
    issued = await credentials.issue("alice", SCOPES)
    await credentials.revoke(issued.key.id)
    with pytest.raises(NotFound):
        await credentials.revoke(issued.key.id)
    with pytest.raises(NotFound):
        await credentials.revoke("key_01hxa3b4c5d6e7f8g9h0j1k2m3")


async def test_revoking_one_key_leaves_the_others(credentials: CredentialService) -> None:
    first = await credentials.issue("alice", SCOPES)
    second = await credentials.issue("alice", frozenset({Scope.WRITE_ALL}))
    await credentials.authenticate(first.secret)
    await credentials.authenticate(second.secret)

    await credentials.revoke(first.key.id)

    principal = await credentials.authenticate(second.secret)
    assert principal.scopes == {Scope.WRITE_ALL}


# -- scopes --------------------------------------------------------------------------------------


def test_parse_scopes_reads_a_comma_separated_list() -> None:
    assert parse_scopes("read:vm, backup:vm,,read:vm ") == {Scope.READ_VM, Scope.BACKUP_VM}
    assert parse_scopes("write:all") == {Scope.WRITE_ALL}


@pytest.mark.parametrize("text", ["read:vm,root", "READ:VM", "read:vms", "write:*"])
def test_parse_scopes_names_an_unknown_scope(text: str) -> None:
    unknown = next(s.strip() for s in text.split(",") if s.strip() not in set(Scope))
    with pytest.raises(ValueError, match=re.escape(f"unknown scope '{unknown}'")) as caught:
        parse_scopes(text)
    assert "read:vm, write:vm, backup:vm, power:vm, write:all" in str(caught.value)


@pytest.mark.parametrize("text", ["", " ", ",", " , ,"])
def test_parse_scopes_needs_at_least_one(text: str) -> None:
    with pytest.raises(ValueError, match="at least one scope is required"):
        parse_scopes(text)


def test_write_all_grants_every_scope() -> None:
    principal = Principal("acct", frozenset({Scope.WRITE_ALL}))
    assert all(principal.has(scope) for scope in Scope)


def test_a_scope_grants_only_itself() -> None:
    principal = Principal("acct", frozenset({Scope.READ_VM}))
    assert {scope for scope in Scope if principal.has(scope)} == {Scope.READ_VM}
    assert not Principal("acct", frozenset()).has(Scope.READ_VM)


async def test_last_use_is_recorded_at_most_once_a_minute_per_key(
    world: World, credentials: CredentialService
) -> None:
    issued = await credentials.issue("alice", SCOPES, name="ci")
    [listed] = await credentials.list_keys("alice")
    assert (listed.key.name, listed.key.last_used_at, listed.account_name) == ("ci", None, "alice")

    first_use = world.clock.now()
    await credentials.authenticate(issued.secret)
    world.clock.advance(seconds=20)
    await credentials.authenticate(issued.secret)  # within the minute: not written again
    [listed] = await credentials.list_keys()
    assert listed.key.last_used_at == first_use

    # Another process (no memory of this one's writes) within the minute: the row is not
    # written either, because the store skips a value that recent.
    other = CredentialService(world.store, world.clock, cache_seconds=0)
    await other.authenticate(issued.secret)
    [listed] = await credentials.list_keys()
    assert listed.key.last_used_at == first_use

    world.clock.advance(minutes=2)
    await other.authenticate(issued.secret)
    [listed] = await credentials.list_keys()
    assert listed.key.last_used_at == world.clock.now()
    with pytest.raises(NotFound):
        await credentials.list_keys("nobody")
