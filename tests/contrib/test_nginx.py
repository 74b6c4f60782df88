"""contrib/nginx/vpsnap.conf in front of a real ``vpsnap serve``: TLS terminates at nginx, the
API answers through it, and the client address vpsnap records is the one nginx saw (its
``X-Forwarded-For``), never one the client made up."""

from __future__ import annotations

import json
import re
import shutil
import signal
import ssl
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.live_server import ServerProcess, free_port

pytestmark = [pytest.mark.qemu, pytest.mark.slow]

SITE = Path(__file__).resolve().parents[2] / "contrib" / "nginx" / "vpsnap.conf"
# A second loopback address: the "client" connects from it, so nginx sees a client address
# that is not the proxy's own.
CLIENT_ADDRESS = "127.0.0.2"


def trusting(cert: Path) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(cert))


def self_signed(directory: Path) -> tuple[Path, Path]:
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
            "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost",
            "-keyout", str(key), "-out", str(cert),
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return cert, key


def site_for_test(
    upstream_port: int, https_port: int, http_port: int, cert: Path, key: Path
) -> str:
    """The shipped site with this test's ports and certificate (nothing else changed)."""
    text = SITE.read_text()
    replacements = [
        (r"server 127\.0\.0\.1:8080;", f"server 127.0.0.1:{upstream_port};"),
        (r"listen 443 ssl;", f"listen 127.0.0.1:{https_port} ssl;"),
        (r"listen \[::\]:443 ssl;\n", ""),
        (r"listen 80;", f"listen 127.0.0.1:{http_port};"),
        (r"listen \[::\]:80;\n", ""),
        (r"server_name vpsnap\.example\.com;", "server_name localhost;"),
        (r"ssl_certificate /\S+;", f"ssl_certificate {cert};"),
        (r"ssl_certificate_key /\S+;", f"ssl_certificate_key {key};"),
    ]
    for pattern, replacement in replacements:
        text, count = re.subn(pattern, replacement, text)
        assert count, f"the shipped site no longer has {pattern!r}"
    return text


@pytest.fixture
def nginx(tmp_path: Path) -> Iterator[tuple[str, str, Path, dict[str, str]]]:
    binary = shutil.which("nginx") or (
        "/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None
    )
    if binary is None:
        print("\n!! nginx is missing: scripts/install installs it (Debian package nginx-light)")
        pytest.skip("nginx is not installed")
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    server = ServerProcess(
        data_dir,
        "--demo",
        env={
            "VPSNAP_LOG_LEVEL": "warning",
            "VPSNAP_DEMO_VM": "false",
            "VPSNAP_FORWARDED_ALLOW_IPS": "127.0.0.1",
            "VPSNAP_ALLOWED_HOSTS": "localhost,127.0.0.1",
        },
    )
    conf_dir = tmp_path / "nginx"
    conf_dir.mkdir()
    cert, key = self_signed(conf_dir)
    https_port, http_port = free_port(), free_port()
    (conf_dir / "site.conf").write_text(
        site_for_test(server.port, https_port, http_port, cert, key)
    )
    main = f"""
daemon off;
master_process off;
pid {conf_dir}/nginx.pid;
error_log {conf_dir}/error.log warn;
events {{ worker_connections 64; }}
http {{
    access_log {conf_dir}/access.log;
    client_body_temp_path {conf_dir}/body;
    proxy_temp_path {conf_dir}/proxy;
    fastcgi_temp_path {conf_dir}/fastcgi;
    uwsgi_temp_path {conf_dir}/uwsgi;
    scgi_temp_path {conf_dir}/scgi;
    include {conf_dir}/site.conf;
}}
"""
    (conf_dir / "nginx.conf").write_text(main)
    check = subprocess.run(
        [binary, "-t", "-c", str(conf_dir / "nginx.conf")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert check.returncode == 0, check.stderr
    process = subprocess.Popen(
        [binary, "-c", str(conf_dir / "nginx.conf")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    tokens = json.loads((data_dir / "demo-tokens.json").read_text())
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                httpx.get(
                    f"https://localhost:{https_port}/healthz", verify=trusting(cert), timeout=2
                )
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, (conf_dir / "error.log").read_text()
                time.sleep(0.1)
        yield f"https://localhost:{https_port}", f"http://localhost:{http_port}", cert, tokens
    finally:
        process.send_signal(signal.SIGQUIT)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
        server.stop()


def test_the_api_through_nginx_with_tls(nginx: tuple[str, str, Path, dict[str, str]]) -> None:
    https, http, cert, tokens = nginx
    auth = {"Authorization": f"Bearer {tokens['full']}"}
    transport = httpx.HTTPTransport(local_address=CLIENT_ADDRESS, verify=trusting(cert))
    with httpx.Client(base_url=https, transport=transport, headers=auth, timeout=30) as client:
        assert client.get("/readyz").status_code == 200
        vps_id = client.get("/api/v2/vps", params={"name": "demo-web"}).json()["data"][0]["id"]
        created = client.post(
            f"/api/v2/vps/{vps_id}/snapshots",
            json={"name": "via-nginx"},
            # Made up by the client: nginx replaces it with the address it saw.
            headers={"X-Forwarded-For": "203.0.113.50", "X-Request-Id": "req-through-nginx"},
        )
        assert created.status_code == 202, created.text
        # A long-poll answers at each change of status: ask until the job has ended.
        for _ in range(10):
            job = client.get(created.headers["location"], headers={"Prefer": "wait=30"}).json()
            if job["status"] in ("completed", "failed"):
                break
        assert job["status"] == "completed", job
        assert job["requestId"] == "req-through-nginx"
        [event] = client.get("/api/v2/audit-events", params={"action": "snapshot.create"}).json()[
            "data"
        ]
        assert event["clientIp"] == CLIENT_ADDRESS
        problem = client.post(f"/api/v2/vps/{vps_id}/snapshots", json={"name": "bad name!"})
        assert problem.status_code == 400
        assert problem.headers["content-type"].startswith("application/problem+json")
        assert problem.json()["type"].startswith("https://localhost")  # links follow the proxy
    # Plain HTTP only redirects to HTTPS.
    redirect = httpx.get(f"{http}/api/v2/vps", follow_redirects=False)
    assert redirect.status_code == 301
    assert redirect.headers["location"].startswith("https://localhost")
