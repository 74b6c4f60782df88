"""Which addresses a webhook may reach (server-side request forgery guard), without a server."""

from __future__ import annotations

import ipaddress

import pytest

from vpsnap.events.addresses import AddressPolicy, AddressRefused, parse_url, resolve

STRICT = AddressPolicy()


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "127.8.9.10",
        "::1",
        "::ffff:127.0.0.1",
        "::ffff:10.0.0.1",
        "10.0.0.1",
        "172.16.5.4",
        "192.168.1.1",
        "169.254.169.254",
        "fe80::1",
        "fc00::1",
        "100.64.0.1",
        "0.0.0.0",
        "224.0.0.1",
        "ff02::1",
        "240.0.0.1",
        "192.0.2.10",
    ],
)
def test_internal_addresses_are_refused_by_default(address: str) -> None:
    assert not STRICT.allows(ipaddress.ip_address(address))


@pytest.mark.parametrize("address", ["93.184.215.14", "2606:4700:4700::1111", "1.1.1.1"])
def test_public_addresses_are_allowed(address: str) -> None:
    assert STRICT.allows(ipaddress.ip_address(address))


def test_the_operator_can_allow_networks() -> None:
    policy = AddressPolicy.from_settings(["10.0.0.0/8", "127.0.0.1"])
    assert policy.allows(ipaddress.ip_address("10.20.30.40"))
    assert policy.allows(ipaddress.ip_address("127.0.0.1"))
    assert policy.allows(ipaddress.ip_address("::ffff:127.0.0.1"))
    assert not policy.allows(ipaddress.ip_address("127.0.0.2"))
    assert not policy.allows(ipaddress.ip_address("192.168.0.1"))
    with pytest.raises(ValueError, match="not-a-network"):
        AddressPolicy.from_settings(["not-a-network"])


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("ftp://example.com/", "https://"),
        ("https://user:secret@example.com/", "user name or password"),
        ("https:///nohost", "https://"),
        ("https://example.com/" + "a" * 2000, "longer than"),
    ],
)
def test_unusable_urls(url: str, message: str) -> None:
    with pytest.raises(AddressRefused, match=message):
        parse_url(url)


async def test_a_name_resolving_to_loopback_is_refused() -> None:
    with pytest.raises(AddressRefused, match="may not be sent to"):
        await resolve("http://localhost:8080/hook", STRICT)
    allowed = await resolve(
        "http://localhost:8080/hook", AddressPolicy.from_settings(["127.0.0.0/8", "::1/128"])
    )
    assert allowed.port == 8080
    assert allowed.host == "localhost"
    assert allowed.address.is_loopback


async def test_a_name_that_does_not_resolve_is_refused() -> None:
    with pytest.raises(AddressRefused, match="does not resolve"):
        await resolve("https://nothing.invalid/hook", STRICT)
