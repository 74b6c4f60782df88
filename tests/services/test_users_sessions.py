"""Dashboard users and sessions (issue 11) on SQLite and PostgreSQL: argon2id passwords, roles
to scopes, one sign-in failure message, session rotation, idle and absolute expiry, and the
disabled user whose sessions end at once."""

from __future__ import annotations

from datetime import timedelta

import pytest

from tests.support import ManualClock
from vpsnap.domain.auth import Scope
from vpsnap.domain.errors import Conflict, InvalidRequest, NotFound
from vpsnap.domain.users import ROLE_SCOPES, Role, SessionPolicy
from vpsnap.services.sessions import (
    SIGN_IN_FAILED,
    SessionEnded,
    SessionService,
    SignInFailed,
    csrf_token_for,
    csrf_token_matches,
    from_same_origin,
    origin_of,
)
from vpsnap.services.users import UserService

from .conftest import World

PASSWORD = "correct horse battery"


@pytest.fixture
def users(world: World) -> UserService:
    return world.runtime.services.users


@pytest.fixture
def sessions(world: World) -> SessionService:
    return world.runtime.services.sessions


@pytest.fixture
def policy(sessions: SessionService) -> SessionPolicy:
    return sessions.policy


async def password_hash(world: World, email: str) -> str:
    async with world.store.transaction(read_only=True) as tx:
        stored = await tx.find_user_by_email(email)
    assert stored is not None
    return stored.password_hash


def test_roles_map_to_the_issues_scopes() -> None:
    assert ROLE_SCOPES[Role.OWNER] == {Scope.WRITE_ALL}
    assert ROLE_SCOPES[Role.OPERATOR] == {Scope.READ_VM, Scope.BACKUP_VM, Scope.POWER_VM}
    assert ROLE_SCOPES[Role.VIEWER] == {Scope.READ_VM}


async def test_password_is_stored_as_an_argon2id_hash(world: World, users: UserService) -> None:
    user = await users.create("alice", "  Ann@Example.COM ", Role.OWNER, PASSWORD)

    assert user.email == "ann@example.com"  # normalized
    stored = await password_hash(world, "ann@example.com")
    assert stored.startswith("$argon2id$")
    assert PASSWORD not in stored


async def test_create_refuses_bad_input_and_duplicates(users: UserService) -> None:
    with pytest.raises(InvalidRequest):
        await users.create("alice", "not-an-address", Role.OWNER, PASSWORD)
    with pytest.raises(InvalidRequest):
        await users.create("alice", "ann@example.com", Role.OWNER, "short")
    with pytest.raises(NotFound):
        await users.create("nobody", "ann@example.com", Role.OWNER, PASSWORD)
    await users.create("alice", "ann@example.com", Role.OWNER, PASSWORD)
    with pytest.raises(Conflict):
        await users.create("alice", "ANN@example.com", Role.VIEWER, PASSWORD)
    assert [row.user.email for row in await users.list()] == ["ann@example.com"]


async def test_sign_in_gives_the_roles_scopes_and_a_csrf_token(
    world: World, users: UserService, sessions: SessionService
) -> None:
    user = await users.create("alice", "op@example.com", Role.OPERATOR, PASSWORD)

    signed = await sessions.sign_in("OP@example.com", PASSWORD)
    context = await sessions.authenticate(signed.token)

    assert len(signed.token) >= 43  # 256 bits, url-safe base64
    assert context.user.id == user.id
    assert context.principal.account_id == world.account.id
    assert context.principal.user_id == user.id
    assert context.principal.has(Scope.BACKUP_VM)
    assert not context.principal.has(Scope.WRITE_VM)
    assert context.csrf_token == csrf_token_for(signed.token)
    # Only the hash of the cookie is stored.
    async with world.store.transaction(read_only=True) as tx:
        assert await tx.find_session(signed.token) is None


async def test_sign_in_failures_all_say_the_same(
    users: UserService, sessions: SessionService
) -> None:
    await users.create("alice", "ann@example.com", Role.OWNER, PASSWORD)
    await users.create("alice", "gone@example.com", Role.OWNER, PASSWORD)
    await users.disable("gone@example.com")

    messages = []
    for email, password in (
        ("ann@example.com", "wrong password!"),
        ("nobody@example.com", PASSWORD),
        ("gone@example.com", PASSWORD),
    ):
        with pytest.raises(SignInFailed) as failed:
            await sessions.sign_in(email, password)
        messages.append(failed.value.detail)
    assert messages == [SIGN_IN_FAILED] * 3


async def test_sign_in_rotates_the_session(users: UserService, sessions: SessionService) -> None:
    await users.create("alice", "ann@example.com", Role.OWNER, PASSWORD)
    first = await sessions.sign_in("ann@example.com", PASSWORD)

    second = await sessions.sign_in("ann@example.com", PASSWORD, replacing=first.token)

    assert second.token != first.token
    assert second.session.id != first.session.id
    with pytest.raises(SessionEnded):
        await sessions.authenticate(first.token)
    await sessions.authenticate(second.token)


async def test_idle_timeout_ends_a_session_and_use_keeps_it_alive(
    clock: ManualClock, users: UserService, sessions: SessionService, policy: SessionPolicy
) -> None:
    await users.create("alice", "ann@example.com", Role.OWNER, PASSWORD)
    signed = await sessions.sign_in("ann@example.com", PASSWORD)

    # Used every 20 minutes: alive after an hour, though the idle timeout is 30 minutes.
    for _ in range(3):
        clock.advance(minutes=20)
        await sessions.authenticate(signed.token)
    clock.advance(seconds=policy.idle.total_seconds() + 1)

    with pytest.raises(SessionEnded):
        await sessions.authenticate(signed.token)
    assert policy.idle == timedelta(minutes=30)


async def test_absolute_lifetime_ends_a_session_in_use(
    clock: ManualClock, users: UserService, sessions: SessionService, policy: SessionPolicy
) -> None:
    await users.create("alice", "ann@example.com", Role.OWNER, PASSWORD)
    signed = await sessions.sign_in("ann@example.com", PASSWORD)
    assert policy.lifetime == timedelta(hours=12)

    elapsed = timedelta()
    while elapsed + timedelta(minutes=20) < policy.lifetime:
        clock.advance(minutes=20)
        elapsed += timedelta(minutes=20)
        await sessions.authenticate(signed.token)
    clock.advance(minutes=20)

    with pytest.raises(SessionEnded):
        await sessions.authenticate(signed.token)


async def test_disabling_a_user_ends_their_sessions_at_once(
    users: UserService, sessions: SessionService
) -> None:
    await users.create("alice", "ann@example.com", Role.OWNER, PASSWORD)
    one = await sessions.sign_in("ann@example.com", PASSWORD)
    two = await sessions.sign_in("ann@example.com", PASSWORD)

    assert await users.disable("ann@example.com") == 2

    for signed in (one, two):
        with pytest.raises(SessionEnded):
            await sessions.authenticate(signed.token)
    with pytest.raises(SignInFailed):
        await sessions.sign_in("ann@example.com", PASSWORD)


async def test_new_password_ends_sessions_and_replaces_the_old_one(
    users: UserService, sessions: SessionService
) -> None:
    await users.create("alice", "ann@example.com", Role.OWNER, PASSWORD)
    signed = await sessions.sign_in("ann@example.com", PASSWORD)

    assert await users.set_password("ann@example.com", "a brand new passphrase") == 1

    with pytest.raises(SessionEnded):
        await sessions.authenticate(signed.token)
    with pytest.raises(SignInFailed):
        await sessions.sign_in("ann@example.com", PASSWORD)
    await sessions.sign_in("ann@example.com", "a brand new passphrase")


async def test_sign_out_ends_only_that_session(
    users: UserService, sessions: SessionService
) -> None:
    await users.create("alice", "ann@example.com", Role.OWNER, PASSWORD)
    laptop = await sessions.sign_in("ann@example.com", PASSWORD)
    phone = await sessions.sign_in("ann@example.com", PASSWORD)

    await sessions.sign_out(laptop.token)

    with pytest.raises(SessionEnded):
        await sessions.authenticate(laptop.token)
    await sessions.authenticate(phone.token)


async def test_purge_removes_ended_sessions_only(
    world: World, clock: ManualClock, users: UserService, sessions: SessionService
) -> None:
    await users.create("alice", "ann@example.com", Role.OWNER, PASSWORD)
    old = await sessions.sign_in("ann@example.com", PASSWORD)
    clock.advance(minutes=31)
    fresh = await sessions.sign_in("ann@example.com", PASSWORD)

    assert await sessions.purge() == 1

    await sessions.authenticate(fresh.token)
    async with world.store.transaction(read_only=True) as tx:
        from vpsnap.services.credentials import hash_secret

        assert await tx.find_session(hash_secret(old.token)) is None


def test_csrf_token_is_bound_to_the_session() -> None:
    token = csrf_token_for("session-a")
    assert csrf_token_matches("session-a", token)
    assert not csrf_token_matches("session-b", token)
    assert not csrf_token_matches("session-a", None)
    assert not csrf_token_matches("session-a", "")


@pytest.mark.parametrize(
    ("origin", "fetch_site", "allowed"),
    [
        ("http://127.0.0.1:8080", None, True),
        ("HTTP://127.0.0.1:8080", "same-origin", True),
        ("http://127.0.0.1:8081", "same-origin", False),  # a foreign Origin always loses
        ("http://127.0.0.1", None, False),
        ("https://127.0.0.1:8080", None, False),
        ("null", None, False),
        (None, "same-origin", True),
        (None, "same-site", False),
        (None, "cross-site", False),
        (None, None, False),
    ],
)
def test_same_origin_rule(origin: str | None, fetch_site: str | None, allowed: bool) -> None:
    assert from_same_origin(origin, fetch_site, "http://127.0.0.1:8080") is allowed


def test_origin_normalization() -> None:
    assert origin_of("https://Example.com:443/path") == "https://example.com"
    assert origin_of("http://example.com:80") == "http://example.com"
    assert origin_of("http://[::1]:8080/") == "http://[::1]:8080"
    assert origin_of("null") is None
    assert origin_of("javascript:alert(1)") is None


def test_default_password_costs_are_rfc_9106s_second_profile(tmp_path: object) -> None:
    from pathlib import Path

    from vpsnap.runtime import Runtime
    from vpsnap.settings import Settings

    runtime = Runtime.build(Settings(data_dir=Path(str(tmp_path))))
    hasher = runtime.services.users.passwords.hasher
    assert (hasher.time_cost, hasher.memory_cost, hasher.parallelism) == (3, 64 * 1024, 4)
    assert hasher.type.name == "ID"


async def test_a_hash_made_with_other_costs_is_upgraded_at_sign_in(
    world: World, users: UserService, sessions: SessionService
) -> None:
    import dataclasses

    from argon2 import PasswordHasher

    from vpsnap.services.passwords import Passwords

    await users.create("alice", "ann@example.com", Role.OWNER, PASSWORD)
    assert "m=8192,t=1,p=1" in await password_hash(world, "ann@example.com")
    stronger = Passwords(PasswordHasher(time_cost=2, memory_cost=16 * 1024, parallelism=1))

    await dataclasses.replace(sessions, passwords=stronger).sign_in("ann@example.com", PASSWORD)

    upgraded = await password_hash(world, "ann@example.com")
    assert "m=16384,t=2,p=1" in upgraded
    await dataclasses.replace(sessions, passwords=stronger).sign_in("ann@example.com", PASSWORD)
