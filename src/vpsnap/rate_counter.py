"""Fixed-window rate counting on the configured ``limits`` storage (this process's memory, or
Redis shared by every API process), falling back to this process's memory while a shared
storage is unreachable (docs/scale-out.md, "When Redis is down").

Why a fallback and not fail-closed: the rate limits protect the service from one caller's
flood; refusing *every* caller because the counter store is down would turn a Redis outage into
an API outage. Why not plain fail-open (no limit at all): one caller could then flood the API
for as long as Redis is down. While degraded, each API process counts in its own memory, so a
caller gets at most N budgets for N processes, and answers are never 5xx.

``limits`` itself has no fallback storage (Flask-Limiter's ``in_memory_fallback`` is the model
of this one, but Flask-only), hence this small wrapper. Every call on the shared storage is
bounded by ``timeout_seconds`` (the client's connect and read timeouts, and a wall-clock bound
over both), and after a failure the shared storage is left alone for ``retry_seconds``: a hung
Redis costs at most one bounded wait per retry interval per process, not one per request.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

import structlog
from limits import RateLimitItem
from limits.aio.storage import Storage as AsyncStorage
from limits.aio.strategies import FixedWindowRateLimiter
from limits.errors import ConfigurationError as LimitsConfigurationError
from limits.storage import storage_from_string

from vpsnap.domain.errors import ConfigurationError
from vpsnap.metrics import RATE_LIMIT_STORAGE_ERRORS

if TYPE_CHECKING:
    from vpsnap.settings import Settings

log = structlog.get_logger("vpsnap.rate_limits")

T = TypeVar("T")

MEMORY = "async+memory://"
# Schemes whose client (coredis, limits' async Redis client) takes these timeout options.
_REDIS_SCHEMES = ("async+redis://", "async+rediss://", "async+redis+unix://")


@dataclass(frozen=True, slots=True)
class WindowStats:
    """What is left of a budget: ``remaining`` requests until ``reset_time`` (epoch seconds)."""

    reset_time: float
    remaining: int


class RateCounter:
    """Hits, tests and clears fixed-window counters by (item, namespace, identity).

    ``shared`` is whether the storage is another process's (Redis…): only then is there a
    fallback and a readiness check. ``degraded`` is true while the fallback is in use.
    """

    def __init__(
        self,
        storage_uri: str,
        *,
        timeout_seconds: float = 0.25,
        retry_seconds: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.shared = not storage_uri.startswith(MEMORY)
        options: dict[str, float] = {}
        if storage_uri.startswith(_REDIS_SCHEMES):
            options = {"connect_timeout": timeout_seconds, "stream_timeout": timeout_seconds}
        try:
            storage = storage_from_string(storage_uri, **options)
        except LimitsConfigurationError as exc:  # unknown scheme, client library missing
            raise ConfigurationError(f"VPSNAP_RATE_LIMIT_STORAGE: {exc}") from None
        if not isinstance(storage, AsyncStorage):
            # A synchronous client would block the event loop on every request.
            raise ConfigurationError(
                f"VPSNAP_RATE_LIMIT_STORAGE: {storage_uri.partition('://')[0]}:// is not an "
                "asyncio storage; use async+memory:// or async+redis://HOST:PORT/DB"
            )
        self.storage = storage
        """The configured ``limits`` storage (tests read a memory storage's counters)."""
        self._primary = FixedWindowRateLimiter(self.storage)
        self._local = FixedWindowRateLimiter(storage_from_string(MEMORY)) if self.shared else None
        self._timeout = timeout_seconds
        self._retry = retry_seconds
        self._clock = clock
        self._down_until: float | None = None
        self.last_error: str | None = None
        """Why the shared storage last failed (``None`` once it answers again)."""

    @classmethod
    def from_settings(cls, settings: Settings) -> RateCounter:
        return cls(
            settings.rate_limit_storage,
            timeout_seconds=settings.rate_limit_storage_timeout_seconds,
            retry_seconds=settings.rate_limit_storage_retry_seconds,
        )

    @property
    def degraded(self) -> bool:
        return self._down_until is not None

    async def _call(self, op: Callable[[FixedWindowRateLimiter], Awaitable[T]]) -> T:
        if self._local is None:
            return await op(self._primary)
        if self._down_until is not None and self._clock() < self._down_until:
            return await op(self._local)
        try:
            # The client's own timeouts apply per socket operation (a connect and its HELLO are
            # several); this bounds the whole call, so a hung Redis adds at most this much.
            async with asyncio.timeout(self._timeout):
                result = await op(self._primary)
        except Exception as exc:  # any failure of the counter store (module docstring)
            self._failed(exc)
            return await op(self._local)
        if self._down_until is not None:
            log.warning("rate_limit_storage_recovered")
            self._down_until = None
            self.last_error = None
        return result

    def _failed(self, exc: BaseException) -> None:
        RATE_LIMIT_STORAGE_ERRORS.inc()
        reason = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        if self._down_until is None:
            # Once per outage, not once per request: the counter metric counts every failure.
            log.warning(
                "rate_limit_storage_unavailable",
                error=reason,
                fallback="process memory",
                retry_in_seconds=self._retry,
            )
        self.last_error = reason
        self._down_until = self._clock() + self._retry

    async def hit(self, item: RateLimitItem, namespace: str, identity: str) -> bool:
        """Count one request; False when it is over the budget."""
        return await self._call(lambda limiter: limiter.hit(item, namespace, identity))

    async def test(self, item: RateLimitItem, namespace: str, identity: str) -> bool:
        """Whether one more request would be within the budget (counts nothing)."""
        return await self._call(lambda limiter: limiter.test(item, namespace, identity))

    async def window(self, item: RateLimitItem, namespace: str, identity: str) -> WindowStats:
        async def stats(limiter: FixedWindowRateLimiter) -> WindowStats:
            found = await limiter.get_window_stats(item, namespace, identity)
            return WindowStats(float(found.reset_time), int(found.remaining))

        return await self._call(stats)

    async def clear(self, item: RateLimitItem, namespace: str, identity: str) -> None:
        async def clear(limiter: FixedWindowRateLimiter) -> None:
            await limiter.clear(item, namespace, identity)

        await self._call(clear)

    async def close(self) -> None:
        """Close the shared storage's connections (``limits`` has no close of its own: this
        reaches its Redis client's connection pool; nothing to do for memory)."""
        client = getattr(getattr(self.storage, "bridge", None), "storage", None)
        pool = getattr(client, "connection_pool", None)
        if pool is not None:
            pool.disconnect()
            await asyncio.sleep(0)  # let the transports finish closing

    async def readiness(self) -> str:
        """``ok``, or ``unavailable: <why>`` while the shared storage does not answer (asked
        now, within the timeout; an answer ends the fallback at once)."""
        if not self.shared:
            return "ok"
        try:
            async with asyncio.timeout(self._timeout):
                alive = await self.storage.check()
            if not alive:
                raise ConnectionError("no answer to PING")  # noqa: TRY301 - one failure path
        except Exception as exc:  # reported, never raised (module docstring)
            self._failed(exc)
            return f"unavailable: {self.last_error}"
        if self._down_until is not None:
            log.warning("rate_limit_storage_recovered")
            self._down_until = None
            self.last_error = None
        return "ok"
