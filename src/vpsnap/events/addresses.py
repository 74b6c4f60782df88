"""Where webhooks may be sent: public addresses only, unless the operator allows more.

A tenant's webhook URL makes the server send requests on the tenant's behalf, so a URL that
resolves to the server's own network (loopback, link-local such as cloud metadata at
169.254.169.254, private ranges, carrier-grade NAT, multicast, reserved) would let a tenant
reach what only the host should (server-side request forgery). Every address a name resolves
to is checked when the endpoint is created *and* at each delivery, and the delivery connects
to the address that was checked (never resolving the name a second time), so a name that
changes its answer in between (DNS rebinding) gains nothing.

``VPSNAP_WEBHOOK_ALLOWED_NETWORKS`` lists networks allowed all the same (e.g. a billing system
on the LAN, or ``127.0.0.1/32`` in tests).
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import httpx

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

MAX_URL_LENGTH = 2000


class AddressRefused(Exception):
    """The URL cannot be used as a webhook; the message says why (tenant-facing)."""


@dataclass(frozen=True, slots=True)
class AddressPolicy:
    allowed_networks: tuple[IpNetwork, ...] = ()

    @classmethod
    def from_settings(cls, networks: Iterable[str]) -> AddressPolicy:
        """Raises ``ValueError`` naming a network that does not parse."""
        return cls(tuple(ipaddress.ip_network(n.strip(), strict=False) for n in networks))

    def allows(self, address: IpAddress) -> bool:
        if any(address in network for network in self.allowed_networks):
            return True
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            # ::ffff:127.0.0.1 reaches 127.0.0.1.
            return self.allows(address.ipv4_mapped)
        return address.is_global and not address.is_multicast


@dataclass(frozen=True, slots=True)
class Destination:
    """A checked URL and the address to connect to."""

    url: httpx.URL
    host: str
    port: int
    address: IpAddress


async def lookup(host: str, port: int) -> list[IpAddress]:
    """Every address ``host`` resolves to (the system resolver); ``socket.gaierror`` if none."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    # Strip an IPv6 zone (fe80::1%eth0): the address itself decides.
    return [ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in infos]


def parse_url(url: str) -> httpx.URL:
    """The URL if it can be a webhook at all (http or https, a host, no credentials)."""
    import httpx  # noqa: PLC0415 - not at start-up: ~40-60 ms of imports (rich, pygments, idna)

    if len(url) > MAX_URL_LENGTH:
        raise AddressRefused(f"The URL is longer than {MAX_URL_LENGTH} characters.")
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL as exc:
        raise AddressRefused(f"Not a URL: {exc}.") from None
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise AddressRefused("The URL must start with https:// (or http://) and name a host.")
    if parsed.userinfo:
        raise AddressRefused("The URL must not carry a user name or password.")
    return parsed


async def resolve(url: str, policy: AddressPolicy) -> Destination:
    """Resolve the URL's host and check every address it has; raises ``AddressRefused``."""
    parsed = parse_url(url)
    host = parsed.host
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        addresses = [ipaddress.ip_address(host)]
    except ValueError:
        try:
            addresses = await lookup(host, port)
        except (socket.gaierror, UnicodeError):
            raise AddressRefused(f"The host {host!r} does not resolve.") from None
    refused = [a for a in addresses if not policy.allows(a)]
    if refused or not addresses:
        # Every address must pass: a name with one public and one private address would
        # otherwise reach the private one on some attempts.
        raise AddressRefused(
            f"The host {host!r} resolves to an address webhooks may not be sent to "
            "(loopback, link-local, private or reserved)."
        )
    return Destination(parsed, host, port, addresses[0])
