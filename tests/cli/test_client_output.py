"""Relative times as the client commands show them, and the exit code of every error class."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from vpsnap.cli.exit_codes import ExitCode, exit_code_for
from vpsnap.cli.output import relative
from vpsnap.client import errors

NOW = datetime(2026, 4, 27, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("delta", "shown"),
    [
        (timedelta(hours=24) - timedelta(seconds=5), "in 23 h"),
        (timedelta(hours=47, minutes=59), "in 47 h"),
        (timedelta(days=3, hours=5), "in 3 d"),
        (timedelta(minutes=5, seconds=30), "in 5 min"),
        (timedelta(seconds=42), "in 42 s"),
        (timedelta(0), "in 0 s"),
        (-timedelta(seconds=3), "3 s ago"),
        (-timedelta(hours=2, minutes=10), "2 h ago"),
    ],
)
def test_relative_times_round_down_to_whole_units(delta: timedelta, shown: str) -> None:
    assert relative(NOW + delta, NOW) == shown


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (errors.SnapshotNotFound("x"), ExitCode.NOT_FOUND),
        (errors.CannotMakeRoom("x", "y", reason_code="z"), ExitCode.CONFLICT),
        (errors.SnapshotLimitReached("x"), ExitCode.CONFLICT),
        (errors.IdempotencyKeyReused("x"), ExitCode.CONFLICT),
        (errors.Unauthorized("x"), ExitCode.AUTH),
        (errors.Forbidden("x"), ExitCode.AUTH),
        (errors.RateLimited("x"), ExitCode.RATE_LIMITED),
        (errors.InvalidRequest("x"), ExitCode.USAGE),
        (errors.ConfigurationError("x"), ExitCode.USAGE),
        (errors.AmbiguousVps("x"), ExitCode.USAGE),
        (errors.HypervisorUnavailable("x"), ExitCode.UNAVAILABLE),
        (errors.ConnectionFailed("x"), ExitCode.UNAVAILABLE),
        (errors.UnexpectedResponse("x"), ExitCode.ERROR),
        (errors.VpsnapError("x"), ExitCode.ERROR),
    ],
)
def test_every_error_has_the_documented_exit_code(
    error: errors.VpsnapError, code: ExitCode
) -> None:
    assert exit_code_for(error) == code
