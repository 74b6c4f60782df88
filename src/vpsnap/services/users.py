"""Operator use cases on dashboard users (``vpsnap admin user …``): create, list, disable,
set a password. Disabling a user or changing their password ends their sessions at once."""

from __future__ import annotations

from dataclasses import dataclass

from vpsnap.domain.audit import Actor, AuditAction, Target
from vpsnap.domain.clock import Clock
from vpsnap.domain.errors import FieldError, InvalidRequest, NotFound
from vpsnap.domain.ids import new_id
from vpsnap.domain.ports import Store
from vpsnap.domain.users import Role, User, email_problem, normalize_email, password_problem
from vpsnap.events.audit import AuditTrail, operator_actor
from vpsnap.services.passwords import Passwords


@dataclass(frozen=True, slots=True)
class ListedUser:
    user: User
    account_name: str


def _checked_password(password: str) -> str:
    problem = password_problem(password)
    if problem is not None:
        raise InvalidRequest(problem, [FieldError("/password", problem, "invalid_format")])
    return password


@dataclass(frozen=True, slots=True)
class UserService:
    store: Store
    clock: Clock
    passwords: Passwords

    @property
    def audit(self) -> AuditTrail:
        return AuditTrail(self.store, self.clock)

    async def create(
        self,
        account_name: str,
        email: str,
        role: Role,
        password: str,
        *,
        actor: Actor | None = None,
    ) -> User:
        """A new active user. ``InvalidRequest`` for a bad address or a short password,
        ``NotFound`` for an unknown account, ``Conflict`` when the address is taken. Audited as
        ``user.create`` by ``actor`` (default: the OS user)."""
        actor = actor or operator_actor()
        async with self.audit.refusals(actor, AuditAction.USER_CREATE, account_id=None):
            return await self._create(account_name, email, role, password, actor)

    async def _create(
        self, account_name: str, email: str, role: Role, password: str, actor: Actor
    ) -> User:
        address = normalize_email(email)
        problem = email_problem(address)
        if problem is not None:
            raise InvalidRequest(problem, [FieldError("/email", problem, "invalid_format")])
        password_hash = await self.passwords.hash(_checked_password(password))
        async with self.store.transaction() as tx:
            account = await tx.find_account_by_name(account_name)
            if account is None:
                raise NotFound(f"No account named {account_name!r}.")
            user = User(
                id=new_id("usr"),
                account_id=account.id,
                email=address,
                role=role,
                created_at=self.clock.now(),
            )
            await tx.add_user(user, password_hash)
            await self.audit.record(
                tx,
                actor,
                AuditAction.USER_CREATE,
                account_id=account.id,
                target=Target("user", user.id),
                details={"email": address, "role": role.value},
            )
        return user

    async def list(self, account_name: str | None = None) -> list[ListedUser]:
        async with self.store.transaction(read_only=True) as tx:
            names = {a.id: a.name for a in await tx.list_accounts()}
            account_id = None
            if account_name is not None:
                account_id = next((i for i, n in names.items() if n == account_name), None)
                if account_id is None:
                    raise NotFound(f"No account named {account_name!r}.")
            found = await tx.list_users(account_id)
        return [ListedUser(u, names.get(u.account_id, "?")) for u in found]

    async def disable(self, email: str, *, actor: Actor | None = None) -> int:
        """Disable the user and end every session of theirs; returns how many ended. Audited
        as ``user.disable`` by ``actor`` (default: the OS user)."""
        actor = actor or operator_actor()
        async with (
            self.audit.refusals(actor, AuditAction.USER_DISABLE, account_id=None),
            self.store.transaction() as tx,
        ):
            stored = await tx.find_user_by_email(normalize_email(email))
            if stored is None:
                raise NotFound(f"No user with the email {email!r}.")
            await tx.disable_user(stored.user.id, self.clock.now())
            ended = await tx.delete_user_sessions(stored.user.id)
            await self.audit.record(
                tx,
                actor,
                AuditAction.USER_DISABLE,
                account_id=stored.user.account_id,
                target=Target("user", stored.user.id),
                details={"email": stored.user.email, "sessionsEnded": ended},
            )
            return ended

    async def set_password(self, email: str, password: str, *, actor: Actor | None = None) -> int:
        """Replace the password and end every session of the user (whoever knew the old
        password is signed out); returns how many sessions ended."""
        actor = actor or operator_actor()
        async with self.audit.refusals(actor, AuditAction.USER_SET_PASSWORD, account_id=None):
            password_hash = await self.passwords.hash(_checked_password(password))
            async with self.store.transaction() as tx:
                stored = await tx.find_user_by_email(normalize_email(email))
                if stored is None:
                    raise NotFound(f"No user with the email {email!r}.")
                await tx.set_user_password(stored.user.id, password_hash)
                ended = await tx.delete_user_sessions(stored.user.id)
                # Never the password or its hash: only that it changed.
                await self.audit.record(
                    tx,
                    actor,
                    AuditAction.USER_SET_PASSWORD,
                    account_id=stored.user.account_id,
                    target=Target("user", stored.user.id),
                    details={"email": stored.user.email, "sessionsEnded": ended},
                )
                return ended

    async def password_matches(self, email: str, password: str) -> bool:
        """Whether ``password`` is the user's current one (the demo keeps a known password)."""
        async with self.store.transaction(read_only=True) as tx:
            stored = await tx.find_user_by_email(normalize_email(email))
        if stored is None:
            return False
        return (await self.passwords.verify(stored.password_hash, password)).ok
