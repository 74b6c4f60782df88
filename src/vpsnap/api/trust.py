"""Which request headers the edge may believe: the ``Host`` a request names and the proxies
whose ``X-Forwarded-*`` headers count.

Invariant (docs/api.md, "Hosts, proxies and links"): links and client identity come from
configuration or from trusted proxies only. The ``Host`` header is served only when it names an
allowed host (``VPSNAP_ALLOWED_HOSTS``; by default the names a local server is reached by), and
only then may it appear in a link; a refused one answers ``400 host_not_allowed`` linking to the
configured base. ``X-Forwarded-For`` and ``X-Forwarded-Proto`` count only from the addresses in
``VPSNAP_FORWARDED_ALLOW_IPS`` (uvicorn's ``ProxyHeadersMiddleware`` applies them, see
``app.create_app``); ``X-Forwarded-Host`` and ``Forwarded`` are never read.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from urllib.parse import urlsplit

from starlette.types import Scope

from vpsnap.domain.errors import HostNotAllowed
from vpsnap.settings import Settings

LOCAL_NAMES = ("127.0.0.1", "localhost", "::1")
_WILDCARD_LISTEN = ("", "0.0.0.0", "::")  # noqa: S104 - names, compared, never bound here
# A DNS name or an IPv4 address (letters, digits, dots, hyphens, underscores), or a bracketed
# IPv6 address; then an optional numeric port.
_HOST_HEADER = re.compile(
    r"^(?P<name>[A-Za-z0-9._-]{1,253}|\[[0-9A-Fa-f:.]{2,45}\])(?::(?P<port>[0-9]{1,5}))?$"
)


def _bare(name: str) -> str:
    """A host name as compared: lower case, IPv6 without brackets."""
    name = name.strip().lower()
    return name[1:-1] if name.startswith("[") and name.endswith("]") else name


def _url_host(name: str) -> str:
    """A host name as written in a URL (an IPv6 address in brackets)."""
    try:
        if ipaddress.ip_address(name).version == 6:
            return f"[{name}]"
    except ValueError:
        pass
    return name


@dataclass(frozen=True, slots=True)
class HostPolicy:
    """The hosts this server answers for, and the base of the links it builds.

    ``allowed`` holds names (``api.example.com``), ``*.example.com`` for any subdomain, or
    ``*`` for any host at all (only behind a proxy that sets ``Host`` itself).
    ``public_base_url`` is the configured base of every link; without it a link's base is the
    request's scheme and its (allowed) ``Host``, or ``fallback_base`` when the request names
    no host.
    """

    allowed: frozenset[str]
    public_base_url: str | None
    fallback_base: str

    @classmethod
    def from_settings(cls, settings: Settings) -> HostPolicy:
        allowed = {_bare(h) for h in settings.allowed_hosts if h.strip()}
        if not allowed:
            allowed = set(LOCAL_NAMES)
            if _bare(settings.host) not in _WILDCARD_LISTEN:
                allowed.add(_bare(settings.host))
        public = settings.public_base_url.rstrip("/") if settings.public_base_url else None
        if public:
            public_host = urlsplit(public).hostname
            if public_host:
                allowed.add(public_host.lower())
        listen = _bare(settings.host)
        listen = "127.0.0.1" if listen in _WILDCARD_LISTEN else listen
        fallback = f"http://{_url_host(listen)}:{settings.port}"
        return cls(frozenset(allowed), public, public or fallback)

    def allows(self, name: str) -> bool:
        if "*" in self.allowed or name in self.allowed:
            return True
        return any(
            pattern.startswith("*.") and name.endswith(pattern[1:]) for pattern in self.allowed
        )

    def base_url(self, scope: Scope) -> str:
        """The base of this request's links; raises ``HostNotAllowed`` for a ``Host`` header
        that is malformed or names a host this server does not serve."""
        host = None
        for key, value in scope.get("headers", ()):
            if key == b"host":
                host = value.decode("latin-1")
                break
        if host is None or host == "":
            return self.fallback_base
        match = _HOST_HEADER.match(host)
        if match is None or not self.allows(_bare(match.group("name"))):
            shown = host if len(host) <= 100 else host[:97] + "..."
            raise HostNotAllowed(
                f"This server does not serve the host {shown!r}. Its operator lists the host "
                "names it answers for in VPSNAP_ALLOWED_HOSTS."
            )
        if self.public_base_url:
            return self.public_base_url
        scheme = scope.get("scheme", "http")
        name = _url_host(_bare(match.group("name")))
        port = match.group("port")
        return f"{scheme}://{name}:{port}" if port else f"{scheme}://{name}"
