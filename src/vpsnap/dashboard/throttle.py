"""Sign-in throttling: failed sign-ins are counted per client IP and per email address (known
or not, so the answer says nothing about which addresses exist), with the ``limits`` library
in the configured rate-limit storage (memory, or Redis shared by every API process).

Only failures count. While either count is over its limit every sign-in from that IP or for
that address is refused with ``429`` and ``Retry-After``, the right password included: an
attacker must not learn that a guess was right while throttled.
"""

from __future__ import annotations

import hashlib
import math
import time

from limits import RateLimitItem, parse

from vpsnap.domain.users import normalize_email
from vpsnap.rate_counter import RateCounter

_PER_IP = "login-failures-ip"
_PER_ACCOUNT = "login-failures-account"


def _address_key(email: str) -> str:
    # Hashed: the rate-limit storage (possibly a shared Redis) never holds addresses.
    return hashlib.sha256(normalize_email(email).encode()).hexdigest()[:32]


class LoginThrottle:
    def __init__(self, counter: RateCounter, per_ip: str, per_account: str) -> None:
        self._limiter = counter
        self._per_ip = parse(per_ip)
        self._per_account = parse(per_account)

    def _counters(self, ip: str, email: str) -> list[tuple[RateLimitItem, str, str]]:
        return [
            (self._per_ip, _PER_IP, ip),
            (self._per_account, _PER_ACCOUNT, _address_key(email)),
        ]

    async def retry_after(self, ip: str, email: str) -> int | None:
        """Seconds until a sign-in from ``ip`` for ``email`` may be tried again; None when
        neither count is used up."""
        wait: int | None = None
        for item, namespace, identity in self._counters(ip, email):
            if not await self._limiter.test(item, namespace, identity):
                stats = await self._limiter.window(item, namespace, identity)
                seconds = max(1, math.ceil(stats.reset_time - time.time()))
                wait = max(wait or 0, seconds)
        return wait

    async def failed(self, ip: str, email: str) -> None:
        for item, namespace, identity in self._counters(ip, email):
            await self._limiter.hit(item, namespace, identity)

    async def succeeded(self, ip: str, email: str) -> None:  # noqa: ARG002 - symmetric API
        """A right password resets the address's count (not the IP's: one good account must
        not reset the budget of an IP that guesses at others)."""
        await self._limiter.clear(self._per_account, _PER_ACCOUNT, _address_key(email))
