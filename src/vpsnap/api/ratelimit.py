"""Rate limits with the ``limits`` library: per verified credential, per client address, and
per VPS for mutating snapshot calls, with HostUp's ``X-RateLimit-*`` and the IETF
``RateLimit`` headers."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from datetime import UTC, datetime

from limits import RateLimitItem, parse

from vpsnap.domain.clock import format_timestamp
from vpsnap.domain.errors import RateLimited
from vpsnap.metrics import RATE_LIMITED
from vpsnap.rate_counter import RateCounter


@dataclass(frozen=True, slots=True)
class RateState:
    policy: str
    limit: int
    window_seconds: int
    remaining: int
    reset_at: float
    allowed: bool

    @property
    def retry_after(self) -> int:
        return max(1, math.ceil(self.reset_at - time.time()))

    def headers(self) -> dict[str, str]:
        reset_in = max(0, math.ceil(self.reset_at - time.time()))
        return {
            "X-RateLimit-Limit": str(self.limit),
            "X-RateLimit-Remaining": str(self.remaining),
            "X-RateLimit-Reset": format_timestamp(datetime.fromtimestamp(self.reset_at, UTC)),
            "RateLimit-Policy": f'"{self.policy}";q={self.limit};w={self.window_seconds}',
            "RateLimit": f'"{self.policy}";r={self.remaining};t={reset_in}',
        }


class RateLimits:
    """The budgets, and what each is keyed on.

    Invariant (docs/api.md, "Rate limits"): no limiter key is a value an unauthenticated
    caller chooses. ``per-ip`` is keyed on the client address (the peer, or what a trusted
    proxy says, ``api.trust``); ``per-key`` on the id of a verified principal, never on a
    presented secret; ``per-vps-snapshot-mutations`` on the verified account and a VPS id of
    the documented shape (checked before the route runs).

    The counts live in ``counter`` (this process's memory, or Redis shared by every API
    process, with this process's memory as the fallback while Redis is down).
    """

    def __init__(
        self,
        counter: RateCounter,
        per_key: str,
        per_vps_mutations: str,
        per_ip: str | None = None,
    ) -> None:
        self.counter = counter
        self._per_key = parse(per_key)
        self._per_vps = parse(per_vps_mutations)
        self._per_ip = parse(per_ip) if per_ip is not None else self._per_key

    async def _hit(self, policy: str, item: RateLimitItem, identity: str) -> RateState:
        allowed = await self.counter.hit(item, policy, identity)
        if not allowed:
            RATE_LIMITED.labels(policy).inc()
        stats = await self.counter.window(item, policy, identity)
        return RateState(
            policy=policy,
            limit=item.amount,
            window_seconds=item.get_expiry(),
            remaining=stats.remaining,
            reset_at=stats.reset_time,
            allowed=allowed,
        )

    async def hit_address(self, address: str) -> RateState:
        """Count a request without a verified credential (or one checking a credential)."""
        return await self._hit("per-ip", self._per_ip, address)

    async def hit_principal(self, principal_id: str) -> RateState:
        """Count a request of an authenticated principal (``Principal.principal_id``)."""
        return await self._hit("per-key", self._per_key, principal_id)

    async def hit_vps_mutation(self, account_id: str, vps_id: str) -> None:
        # Keyed by account too, so nobody can spend the budget of a VPS that is not theirs.
        state = await self._hit(
            "per-vps-snapshot-mutations", self._per_vps, f"{account_id}:{vps_id}"
        )
        if not state.allowed:
            raise RateLimited(
                f"Too many snapshot changes on this VPS: at most {state.limit} per "
                f"{state.window_seconds} s. Retry in {state.retry_after} s.",
                state.retry_after,
            )
