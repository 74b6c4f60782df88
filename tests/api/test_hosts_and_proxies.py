"""Caller-controlled headers are not trusted (issue 9, kind 13): links come from configuration
or an allowed Host, client identity from the peer address or, only from configured proxies,
from ``X-Forwarded-For``."""

from __future__ import annotations

import asyncio

import pytest

from tests.api.test_errors import assert_problem
from tests.conftest import Api

UNKNOWN_VPS = "/api/v2/vps/vps_" + "0" * 26


class TestDefaults:
    """No VPSNAP_ALLOWED_HOSTS, no VPSNAP_PUBLIC_BASE_URL, no trusted proxy."""

    @pytest.fixture
    def api_overrides(self) -> dict[str, object]:
        return {"allowed_hosts": [], "rate_limit_per_ip": "5/minute"}

    async def test_an_unknown_host_is_refused_and_never_linked(self, api: Api) -> None:
        """The reproduction: `Host: evil.example` made links to http://evil.example/errors/…."""
        response = await api.client.get(UNKNOWN_VPS, headers={**api.auth(), "Host": "evil.example"})
        body = assert_problem(response, 400, "host_not_allowed")
        assert "evil.example" not in str(body["type"])
        assert str(body["type"]) == "http://127.0.0.1:8080/errors/host_not_allowed"
        assert "VPSNAP_ALLOWED_HOSTS" in str(body["detail"])
        # Also on paths without authentication, and whatever the port or case.
        for host in ("evil.example:8080", "EVIL.example", "127.0.0.1.evil.example", "[::2]:8080"):
            refused = await api.client.get("/healthz", headers={"Host": host})
            assert refused.status_code == 400, host

    @pytest.mark.parametrize(
        ("host", "base"),
        [
            ("127.0.0.1:8080", "http://127.0.0.1:8080"),
            ("localhost", "http://localhost"),
            ("LOCALHOST:9000", "http://localhost:9000"),
            ("[::1]:8080", "http://[::1]:8080"),
        ],
    )
    async def test_the_local_names_are_served_and_linked(
        self, api: Api, host: str, base: str
    ) -> None:
        response = await api.client.get(UNKNOWN_VPS, headers={**api.auth(), "Host": host})
        body = assert_problem(response, 404, "vps_not_found")
        assert body["type"] == f"{base}/errors/vps_not_found"

    async def test_a_malformed_host_is_refused(self, api: Api) -> None:
        for host in ("localhost:80x", "localhost:", "local host", "a/b"):
            response = await api.client.get("/healthz", headers={"Host": host})
            assert response.status_code == 400, host

    async def test_forwarded_headers_are_ignored(self, api: Api) -> None:
        headers = {
            "Host": "localhost",
            "X-Forwarded-Proto": "https",
            "X-Forwarded-Host": "evil.example",
            "Forwarded": "for=198.51.100.7;proto=https;host=evil.example",
        }
        remaining = []
        for i in range(3):
            response = await api.client.get(
                UNKNOWN_VPS, headers={**headers, "X-Forwarded-For": f"198.51.100.{i}"}
            )
            body = assert_problem(response, 401, "unauthorized")
            assert body["type"] == "http://localhost/errors/unauthorized"
            remaining.append(int(response.headers["x-ratelimit-remaining"]))
        # One client address (the peer), whatever X-Forwarded-For claims.
        assert remaining == [4, 3, 2]


class TestConfiguredHosts:
    @pytest.fixture
    def api_overrides(self) -> dict[str, object]:
        return {
            "allowed_hosts": ["api.example.com", "*.internal.example"],
            "public_base_url": "https://vpsnap.example.com/",
        }

    async def test_links_come_from_the_public_base_url(self, api: Api) -> None:
        for host in ("api.example.com", "vpsnap.example.com", "node1.internal.example"):
            response = await api.client.get(UNKNOWN_VPS, headers={**api.auth(), "Host": host})
            body = assert_problem(response, 404, "vps_not_found")
            assert body["type"] == "https://vpsnap.example.com/errors/vps_not_found"

    async def test_hosts_outside_the_list_are_refused(self, api: Api) -> None:
        for host in ("localhost", "internal.example", "evil.example", "api.example.com.evil"):
            response = await api.client.get(UNKNOWN_VPS, headers={**api.auth(), "Host": host})
            body = assert_problem(response, 400, "host_not_allowed")
            assert body["type"] == "https://vpsnap.example.com/errors/host_not_allowed"

    async def test_a_failed_jobs_problem_links_to_the_public_base_url(self, api: Api) -> None:
        # A snapshot on the disk that vpsnap did not make: the create job fails on it.
        tool = await asyncio.create_subprocess_exec(
            "qemu-img", "snapshot", "-c", "clash", str(api.disk("demo-db"))
        )
        assert await tool.wait() == 0
        headers = {**api.auth(), "Host": "api.example.com"}
        created = await api.client.post(
            f"/api/v2/vps/{api.vps_ids['demo-db']}/snapshots",
            json={"name": "clash"},
            headers=headers,
        )
        assert created.status_code == 202, created.text
        for _ in range(20):
            polled = await api.client.get(
                created.headers["location"], headers={**headers, "Prefer": "wait=5"}
            )
            if polled.json()["status"] == "failed":
                break
        error = polled.json()["error"]
        assert error["type"] == "https://vpsnap.example.com/errors/snapshot_name_taken"


class TestTrustedProxy:
    """The test client connects from 127.0.0.1, listed as a proxy here."""

    @pytest.fixture
    def api_overrides(self) -> dict[str, object]:
        return {
            "allowed_hosts": ["api.example.com"],
            "forwarded_allow_ips": ["127.0.0.1"],
            "rate_limit_per_ip": "5/minute",
        }

    async def test_the_client_address_comes_from_x_forwarded_for(self, api: Api) -> None:
        def remaining(address: str) -> dict[str, str]:
            return {"Host": "api.example.com", "X-Forwarded-For": address}

        first = await api.client.get("/healthz", headers=remaining("198.51.100.1"))
        again = await api.client.get("/healthz", headers=remaining("198.51.100.1"))
        other = await api.client.get("/healthz", headers=remaining("198.51.100.2"))
        assert [int(r.headers["x-ratelimit-remaining"]) for r in (first, again, other)] == [
            4,
            3,
            4,
        ]
        # The right-most address the proxy did not add is the client: a spoofed left part of
        # the header does not pick another budget.
        spoofed = await api.client.get("/healthz", headers=remaining("203.0.113.9, 198.51.100.1"))
        assert int(spoofed.headers["x-ratelimit-remaining"]) == 2

    async def test_the_scheme_comes_from_x_forwarded_proto_but_never_the_host(
        self, api: Api
    ) -> None:
        response = await api.client.get(
            UNKNOWN_VPS,
            headers={
                **api.auth(),
                "Host": "api.example.com",
                "X-Forwarded-Proto": "https",
                "X-Forwarded-Host": "evil.example",
            },
        )
        body = assert_problem(response, 404, "vps_not_found")
        assert body["type"] == "https://api.example.com/errors/vps_not_found"


class TestUntrustedProxy:
    @pytest.fixture
    def api_overrides(self) -> dict[str, object]:
        return {
            "allowed_hosts": ["api.example.com"],
            "forwarded_allow_ips": ["10.0.0.1", "192.0.2.0/24"],
            "rate_limit_per_ip": "5/minute",
        }

    async def test_forwarded_headers_of_other_peers_are_ignored(self, api: Api) -> None:
        statuses = []
        for i in range(3):
            response = await api.client.get(
                "/healthz",
                headers={"Host": "api.example.com", "X-Forwarded-For": f"198.51.100.{i}"},
            )
            statuses.append(int(response.headers["x-ratelimit-remaining"]))
        assert statuses == [4, 3, 2]
