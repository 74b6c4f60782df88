"""``vpsnap serve`` and forwarded headers (issue 9, kind 13), on a real server process.

uvicorn believes ``X-Forwarded-For`` from 127.0.0.1 unless told otherwise; vpsnap's server
believes it only from the proxies it is given (``--forwarded-allow-ips``, ``--proxy-headers``,
``VPSNAP_FORWARDED_ALLOW_IPS``), and refuses a ``Host`` it does not serve.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from tests.live_server import ServerProcess

pytestmark = [pytest.mark.slow]

ENV = {"VPSNAP_LOG_LEVEL": "warning", "VPSNAP_RATE_LIMIT_PER_IP": "50/minute"}


def remaining_for(server: ServerProcess, forwarded_for: str) -> int:
    response = httpx.get(
        f"{server.url}/healthz", headers={"X-Forwarded-For": forwarded_for}, timeout=10
    )
    assert response.status_code == 200
    return int(response.headers["x-ratelimit-remaining"])


def test_by_default_x_forwarded_for_is_not_believed(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path, env=ENV, ready_path="/healthz")
    try:
        first = remaining_for(server, "198.51.100.1")
        second = remaining_for(server, "198.51.100.2")
        # One client (the peer, 127.0.0.1): a claimed address does not get a budget of its own.
        assert second == first - 1
        refused = httpx.get(f"{server.url}/healthz", headers={"Host": "evil.example"}, timeout=10)
        assert refused.status_code == 400
        assert refused.json()["code"] == "host_not_allowed"
        assert "evil.example" not in refused.json()["type"]
    finally:
        server.stop()


@pytest.mark.parametrize(
    "flags", [("--forwarded-allow-ips", "127.0.0.1"), ("--proxy-headers",)], ids=["list", "flag"]
)
def test_a_listed_proxy_names_the_client(tmp_path: Path, flags: tuple[str, ...]) -> None:
    server = ServerProcess(tmp_path, *flags, env=ENV, ready_path="/healthz")
    try:
        first = remaining_for(server, "198.51.100.1")
        again = remaining_for(server, "198.51.100.1")
        other = remaining_for(server, "198.51.100.2")
        assert again == first - 1
        assert other == first  # another client behind the proxy: its own budget
    finally:
        server.stop()


def test_no_proxy_headers_overrides_the_environment(tmp_path: Path) -> None:
    env = {**ENV, "VPSNAP_FORWARDED_ALLOW_IPS": "127.0.0.1"}
    server = ServerProcess(tmp_path, "--no-proxy-headers", env=env, ready_path="/healthz")
    try:
        first = remaining_for(server, "198.51.100.1")
        assert remaining_for(server, "198.51.100.2") == first - 1
    finally:
        server.stop()
