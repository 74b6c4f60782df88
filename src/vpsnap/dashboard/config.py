"""What the panel needs from the settings, kept on ``app.state.dashboard``."""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import Request

from vpsnap.dashboard.throttle import LoginThrottle
from vpsnap.rate_counter import RateCounter
from vpsnap.settings import Settings


@dataclass(frozen=True, slots=True)
class DashboardConfig:
    secure_cookies: bool
    """``Secure`` on the session cookie: the public base URL is https."""
    session_lifetime_seconds: int
    throttle: LoginThrottle

    @classmethod
    def from_settings(cls, settings: Settings, counter: RateCounter) -> DashboardConfig:
        """``counter``: the API's rate counter (one storage client, one fallback state)."""
        base = (settings.public_base_url or "").strip().lower()
        return cls(
            secure_cookies=base.startswith("https://"),
            session_lifetime_seconds=int(settings.session_lifetime_seconds),
            throttle=LoginThrottle(
                counter,
                settings.login_failures_per_ip,
                settings.login_failures_per_account,
            ),
        )


def dashboard_config(request: Request) -> DashboardConfig:
    config: DashboardConfig = request.app.state.dashboard
    return config
