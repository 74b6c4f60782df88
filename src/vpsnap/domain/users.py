"""Dashboard users: who signs in to the web panel, their role in an account, and sessions.

A user belongs to one account and has one role; the role decides the scopes a session carries
(the same scopes an API key would have), so the panel and the API enforce one set of rules.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from vpsnap.domain.auth import Scope


class Role(StrEnum):
    OWNER = "owner"
    OPERATOR = "operator"
    VIEWER = "viewer"


# Issue 11: owner → write:all; operator → read, backup and power; viewer → read only.
ROLE_SCOPES: dict[Role, frozenset[Scope]] = {
    Role.OWNER: frozenset({Scope.WRITE_ALL}),
    Role.OPERATOR: frozenset({Scope.READ_VM, Scope.BACKUP_VM, Scope.POWER_VM}),
    Role.VIEWER: frozenset({Scope.READ_VM}),
}

# Deliberately loose (RFC 5322 is not worth enforcing here): one @, no spaces, a dot in the
# domain. The address is an identifier for signing in, not a mailbox we write to.
_EMAIL = re.compile(r"^[^@\s]{1,64}@[^@\s]+\.[^@\s]+$")
EMAIL_MAX_LENGTH = 254
PASSWORD_MIN_LENGTH = 12
# argon2 hashes whatever it is given; the cap only stops a megabyte "password" from being a
# cheap way to burn CPU.
PASSWORD_MAX_LENGTH = 1024


def normalize_email(email: str) -> str:
    """The stored and compared form: trimmed and lowercased (sign-in ignores case)."""
    return email.strip().lower()


def email_problem(email: str) -> str | None:
    """Why ``email`` (normalized) is not acceptable, or None."""
    if len(email) > EMAIL_MAX_LENGTH or _EMAIL.fullmatch(email) is None:
        return f"{email!r} is not an email address."
    return None


def password_problem(password: str) -> str | None:
    """Why ``password`` is not acceptable as a new password, or None."""
    if len(password) < PASSWORD_MIN_LENGTH:
        return f"A password needs at least {PASSWORD_MIN_LENGTH} characters."
    if len(password) > PASSWORD_MAX_LENGTH:
        return f"A password may have at most {PASSWORD_MAX_LENGTH} characters."
    return None


@dataclass(frozen=True, slots=True)
class User:
    id: str
    account_id: str
    email: str
    role: Role
    created_at: datetime
    disabled_at: datetime | None = None

    @property
    def scopes(self) -> frozenset[Scope]:
        return ROLE_SCOPES[self.role]

    @property
    def is_active(self) -> bool:
        return self.disabled_at is None


@dataclass(frozen=True, slots=True)
class SessionPolicy:
    """How long a dashboard session lives: ``idle`` since its last request, ``lifetime`` since
    sign-in, whichever ends first (settings; defaults 30 min and 12 h)."""

    idle: timedelta
    lifetime: timedelta

    @property
    def touch_interval(self) -> timedelta:
        """How stale ``last_seen_at`` may get before a request rewrites it.

        Writing it on every request would make every page view a database write; a sixth of
        the idle timeout (at most a minute) keeps the idle expiry within that of exact.
        """
        return min(self.idle / 6, timedelta(minutes=1))


@dataclass(frozen=True, slots=True)
class Session:
    id: str
    user_id: str
    created_at: datetime
    last_seen_at: datetime

    def ends_at(self, policy: SessionPolicy) -> datetime:
        return min(self.last_seen_at + policy.idle, self.created_at + policy.lifetime)

    def is_live(self, now: datetime, policy: SessionPolicy) -> bool:
        return now < self.ends_at(policy)
