"""The audit trail: who did what to which thing, when, from where, and how it ended.

An ``AuditEvent`` is written in the same transaction as the action it describes (a rolled-back
action leaves none); a refusal (a ``DomainError`` the service raised) is written on its own
afterwards with outcome ``failed`` and the problem code. Events are never updated; they are
purged only after the audit retention (``VPSNAP_AUDIT_RETENTION_DAYS``), independently of jobs.
docs/operations.md lists every action.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from vpsnap.domain.auth import Principal


class ActorKind(StrEnum):
    API_KEY = "api_key"
    """A caller of the API with a key (``id``: the key id)."""
    USER = "user"
    """A dashboard user signed in with a session (``id``: the user id)."""
    ADMIN = "admin"
    """The operator at the ``vpsnap admin`` command line (``id``: the OS user)."""
    SCHEDULER = "scheduler"
    """vpsnap's own periodic work: expiry, schedule runs, webhook delivery."""
    RECONCILER = "reconciler"
    """Reconciliation of the database with the disks."""


@dataclass(frozen=True, slots=True)
class Actor:
    """Who acted: a kind, a stable id within the kind, and a label for people (optional)."""

    kind: ActorKind
    id: str
    label: str | None = None

    @classmethod
    def of(cls, principal: Principal) -> Actor:
        """The actor behind an authenticated caller."""
        user_id: str | None = getattr(principal, "user_id", None)
        if user_id:  # a dashboard session (Principal.user_id, docs/dashboard.md)
            return cls(ActorKind.USER, user_id)
        # Without a key id (a principal built in-process) the account is all that is known.
        return cls(ActorKind.API_KEY, principal.key_id or f"account:{principal.account_id}")

    @classmethod
    def admin(cls, os_user: str) -> Actor:
        return cls(ActorKind.ADMIN, os_user)

    def as_json(self) -> dict[str, Any]:
        return {"kind": self.kind.value, "id": self.id, "label": self.label}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Actor:
        return cls(ActorKind(data["kind"]), str(data["id"]), data.get("label"))


SCHEDULER = Actor(ActorKind.SCHEDULER, "scheduler")
RECONCILER = Actor(ActorKind.RECONCILER, "reconciler")


class AuditOutcome(StrEnum):
    SUCCEEDED = "succeeded"
    """Done (or, for an action that runs as a job, accepted and queued: the job says the rest)."""
    FAILED = "failed"
    """Refused; ``problem_code`` says why."""


class AuditAction(StrEnum):
    """Every action the trail records (docs/operations.md, "Audit trail")."""

    SNAPSHOT_CREATE = "snapshot.create"
    SNAPSHOT_DELETE = "snapshot.delete"
    SNAPSHOT_RESTORE = "snapshot.restore"
    SNAPSHOT_EXPIRE = "snapshot.expire"
    SNAPSHOT_SCHEDULED = "snapshot.scheduled"
    SCHEDULE_UPDATE = "schedule.update"
    SCHEDULE_DELETE = "schedule.delete"
    VPS_CONFIG = "vps.config"
    VPS_START = "vps.start"
    VPS_SHUTDOWN = "vps.shutdown"
    VPS_STOP = "vps.stop"
    VPS_RESTART = "vps.restart"
    VPS_RESET = "vps.reset"
    VPS_ADD = "vps.add"
    VPS_UPDATE = "vps.update"
    VPS_REMOVE = "vps.remove"
    ACCOUNT_CREATE = "account.create"
    KEY_CREATE = "key.create"
    KEY_REVOKE = "key.revoke"
    USER_CREATE = "user.create"
    USER_DISABLE = "user.disable"
    USER_SET_PASSWORD = "user.set_password"  # noqa: S105 - an action name, not a password
    WEBHOOK_CREATE = "webhook.create"
    WEBHOOK_DELETE = "webhook.delete"
    WEBHOOK_TEST = "webhook.test"
    WEBHOOK_DISABLE = "webhook.disable"
    RECONCILE_MARK_MISSING = "reconcile.mark_missing"
    RECONCILE_REAPPEARED = "reconcile.reappeared"
    RECONCILE_REMOVE_LEFTOVER = "reconcile.remove_leftover"


@dataclass(frozen=True, slots=True)
class Target:
    """What an action was done to: a kind (``vps``, ``snapshot``, ``key``, …) and its id."""

    type: str
    id: str


@dataclass(frozen=True, slots=True)
class AuditEvent:
    id: str
    occurred_at: datetime
    account_id: str | None
    actor: Actor
    action: str
    outcome: AuditOutcome
    target: Target | None = None
    vps_id: str | None = None
    request_id: str | None = None
    client_ip: str | None = None
    problem_code: str | None = None
    details: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class AuditFilter:
    """Which events to list; every field that is set must match (``since`` inclusive,
    ``until`` exclusive)."""

    account_id: str | None = None
    vps_id: str | None = None
    actor_id: str | None = None
    actor_kind: ActorKind | None = None
    action: str | None = None
    since: datetime | None = None
    until: datetime | None = None
