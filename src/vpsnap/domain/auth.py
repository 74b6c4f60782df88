"""Who is calling and what they may do."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Scope(StrEnum):
    READ_VM = "read:vm"
    WRITE_VM = "write:vm"
    BACKUP_VM = "backup:vm"
    POWER_VM = "power:vm"
    WRITE_ALL = "write:all"
    READ_AUDIT = "read:audit"
    """The account's audit trail (``GET /api/v2/audit-events``); write:all grants it too."""


def parse_scopes(text: str) -> frozenset[Scope]:
    """Parse ``read:vm,backup:vm``; raises ValueError naming an unknown scope."""
    scopes: set[Scope] = set()
    for raw in text.split(","):
        item = raw.strip()
        if not item:
            continue
        try:
            scopes.add(Scope(item))
        except ValueError:
            known = ", ".join(s.value for s in Scope)
            raise ValueError(f"unknown scope {item!r} (known: {known})") from None
    if not scopes:
        raise ValueError("at least one scope is required")
    return frozenset(scopes)


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated caller: one account, the scopes of the key or session used."""

    account_id: str
    scopes: frozenset[Scope]
    key_id: str | None = None
    user_id: str | None = None
    """Set when the caller is a dashboard user signed in with a session (then no key_id)."""

    @property
    def principal_id(self) -> str:
        """Who is acting, as a stable id: the API key's (``key_…``) or the dashboard user's
        (``user:usr_…``). Per-caller budgets and logs are keyed on this, never on a presented
        secret; a key and a session are separate callers."""
        if self.key_id:
            return self.key_id
        if self.user_id:
            return f"user:{self.user_id}"
        return f"account:{self.account_id}"

    def has(self, scope: Scope) -> bool:
        # write:all is the vpsnap catch-all scope: it grants every other scope.
        return Scope.WRITE_ALL in self.scopes or scope in self.scopes
