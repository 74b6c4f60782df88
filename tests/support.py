"""Helpers shared by the test suites."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta


@dataclass
class ManualClock:
    """A clock that only moves when the test says so."""

    moment: datetime = datetime(2026, 4, 27, 12, 0, 0, tzinfo=UTC)

    def now(self) -> datetime:
        return self.moment

    def advance(self, **delta: float) -> None:
        self.moment += timedelta(**delta)


PROBLEM_MEMBERS = {
    "type",
    "title",
    "status",
    "detail",
    "code",
    "instance",
    "requestId",
    "timestamp",
}
