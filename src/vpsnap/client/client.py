"""``Client`` and ``AsyncClient``: a connection (URL, key, timeouts, retries) and the API's
resources. Both share every operation; only the transport differs."""

from __future__ import annotations

import os
from types import TracebackType
from typing import Generic, Self

import httpx

from vpsnap import __version__
from vpsnap.client._http import RetryPolicy, fetch
from vpsnap.client._plan import Plan, get
from vpsnap.client._runners import (
    Async,
    AsyncRunner,
    Bound,
    M,
    Runner,
    Sync,
    SyncRunner,
    api_method,
)
from vpsnap.client.audit import AuditEvents
from vpsnap.client.errors import ConfigurationError
from vpsnap.client.inventory import Inventory
from vpsnap.client.jobs import Jobs
from vpsnap.client.models import ServerVersion
from vpsnap.client.schedules import Schedules
from vpsnap.client.snapshots import Snapshots
from vpsnap.client.webhooks import Webhooks

DEFAULT_URL = "http://127.0.0.1:8080"  # where `vpsnap serve` listens by default
DEFAULT_TIMEOUT = 30.0
URL_ENV = "VPSNAP_URL"
API_KEY_ENV = "VPSNAP_API_KEY"

Timeout = float | httpx.Timeout


def connection_settings(url: str | None, api_key: str | None) -> tuple[str, str]:
    """Arguments first, then ``VPSNAP_URL`` / ``VPSNAP_API_KEY``; the URL defaults to the
    local server. ``ConfigurationError`` for a missing key, and for a key or URL that cannot
    be sent (checked here, so that no ``UnicodeEncodeError`` or ``InvalidURL`` comes later)."""
    url = url or os.environ.get(URL_ENV) or DEFAULT_URL
    api_key = api_key or os.environ.get(API_KEY_ENV)
    if not api_key:
        raise ConfigurationError(f"no API key: pass api_key= or set {API_KEY_ENV}")
    check_api_key(api_key)
    return check_url(url), api_key


def check_api_key(api_key: str) -> None:
    """An HTTP header carries printable ASCII only; never echo the key itself."""
    if not all(33 <= ord(c) <= 126 for c in api_key):
        bad = next(c for c in api_key if not 33 <= ord(c) <= 126)
        raise ConfigurationError(
            f"the API key contains a character that cannot be sent in an HTTP header "
            f"({bad!a}, at position {api_key.index(bad) + 1} of {len(api_key)}): vpsnap keys "
            "are printable ASCII; was it copied with a typo or a stray character?"
        )


def check_url(url: str) -> str:
    """The base URL without its trailing slash; ``ConfigurationError`` when it is not an
    http(s) URL with a host and a valid port."""
    if not url.startswith(("http://", "https://")):
        raise ConfigurationError(f"the vpsnap URL must start with http:// or https://: {url!r}")
    try:
        parsed = httpx.URL(url)
        port = parsed.port
    except (httpx.InvalidURL, ValueError, UnicodeError) as exc:
        raise ConfigurationError(f"the vpsnap URL {url!r} cannot be used: {exc}") from None
    host = parsed.host
    if not host or not all(c.isalnum() or c in ".-:[]_" for c in host):
        raise ConfigurationError(f"the vpsnap URL {url!r} has no valid host name")
    if port is not None and not 0 < port < 65536:
        raise ConfigurationError(f"the vpsnap URL {url!r} has an invalid port ({port})")
    if parsed.query or parsed.fragment:
        raise ConfigurationError(f"the vpsnap URL {url!r} must not have a query or fragment")
    return url.rstrip("/")


def default_headers(api_key: str) -> dict[str, str]:
    return {
        "Authorization": f"Bearer {api_key}",
        "Accept": "application/json",
        "User-Agent": f"vpsnap-client/{__version__}",
    }


class _Resources(Bound[M], Generic[M]):
    vps: Inventory[M]
    """The account's VPSes, power actions, buying snapshot slots."""
    snapshots: Snapshots[M]
    """Snapshots of a VPS, and ``create_safely``."""
    schedules: Schedules[M]
    """A VPS's snapshot schedule."""
    jobs: Jobs[M]
    """Jobs: list, read, wait for them."""
    audit: AuditEvents[M]
    """The account's audit trail (scope ``read:audit``)."""
    webhooks: Webhooks[M]
    """Webhook endpoints for job and snapshot events, test events, delivery attempts."""

    def _attach(self, url: str, runner: Runner[M]) -> None:
        self.url = url
        self._runner = runner
        self.vps = Inventory(runner)
        self.snapshots = Snapshots(runner)
        self.schedules = Schedules(runner)
        self.jobs = Jobs(runner)
        self.audit = AuditEvents(runner)
        self.webhooks = Webhooks(runner)

    def _server_version(self) -> Plan[ServerVersion]:
        """``GET /api/version``: the server's version (needs no scope)."""
        return (yield from fetch(get("/api/version"), self._runner.policy, ServerVersion.parse))

    server_version = api_method(_server_version)


class Client(_Resources[Sync]):
    """The synchronous client::

        with Client() as client:  # VPSNAP_URL, VPSNAP_API_KEY
            snapshot = client.snapshots.create_safely("web-1", "before-upgrade")

    ``timeout`` (seconds, or an ``httpx.Timeout``) bounds each request; a long-poll adds its
    wait to the read timeout. ``transport`` replaces the network (tests, proxies).
    """

    def __init__(
        self,
        url: str | None = None,
        api_key: str | None = None,
        *,
        timeout: Timeout = DEFAULT_TIMEOUT,
        retry: RetryPolicy | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        url, key = connection_settings(url, api_key)
        self._http = httpx.Client(
            base_url=url, headers=default_headers(key), timeout=timeout, transport=transport
        )
        self._attach(url, SyncRunner(self._http, retry or RetryPolicy()))

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class AsyncClient(_Resources[Async]):
    """The asynchronous client: the same API, every call awaited::

    async with AsyncClient() as client:
        snapshot = await client.snapshots.create_safely("web-1", "before-upgrade")
    """

    def __init__(
        self,
        url: str | None = None,
        api_key: str | None = None,
        *,
        timeout: Timeout = DEFAULT_TIMEOUT,
        retry: RetryPolicy | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        url, key = connection_settings(url, api_key)
        self._http = httpx.AsyncClient(
            base_url=url, headers=default_headers(key), timeout=timeout, transport=transport
        )
        self._attach(url, AsyncRunner(self._http, retry or RetryPolicy()))

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()
