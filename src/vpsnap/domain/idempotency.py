"""Idempotency-Key records: the first answer to a POST/DELETE, replayed for 24 hours."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

KEY_MAX_LENGTH = 255
RECORD_LIFETIME = timedelta(hours=24)


class IdempotencyState(StrEnum):
    IN_FLIGHT = "in_flight"
    DONE = "done"


@dataclass(frozen=True, slots=True)
class IdempotencyRecord:
    owner: str
    """Whose key space this is: the account the credential belongs to."""
    key: str
    method: str
    path: str
    fingerprint: str
    """SHA-256 of method, path and body: the same key with another request is refused."""
    state: IdempotencyState
    response_status: int | None
    response_headers: dict[str, str] | None
    response_body: str | None
    created_at: datetime
    expires_at: datetime
