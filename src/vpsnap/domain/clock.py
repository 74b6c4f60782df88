"""Time as a port, so retention, leases and schedules can be tested without sleeping."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Protocol


class Clock(Protocol):
    def now(self) -> datetime:
        """The current time, timezone-aware UTC."""
        ...


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)


def format_timestamp(moment: datetime) -> str:
    """The contract's timestamp form: UTC, milliseconds, ``Z`` (``2026-04-27T12:34:56.000Z``)."""
    # isoformat truncates to milliseconds as the contract's form does; it is about twice as
    # fast as strftime, and every timestamp of every list answer goes through here.
    return moment.astimezone(UTC).isoformat(timespec="milliseconds")[:23] + "Z"
