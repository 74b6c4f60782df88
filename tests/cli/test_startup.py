"""Fast start: the client commands, ``--help`` and completion load nothing of the server.

Each case runs the real entry point in a fresh interpreter and lists what it imported
(``sys.modules`` at exit). Time itself is measured by ``bench/cli_startup.py``, not here.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.live_server import LiveServer

SERVER_PACKAGES = {
    "sqlalchemy",
    "alembic",
    "fastapi",
    "uvicorn",
    "pydantic_settings",
    "pydantic",
    "starlette",
    "structlog",
    "aiosqlite",
    "asyncpg",
}
SERVER_MODULES = (
    "vpsnap.api",
    "vpsnap.services",
    "vpsnap.store",
    "vpsnap.runtime",
    "vpsnap.settings",
    "vpsnap.drivers",
    "vpsnap.jobs",
    "vpsnap.domain",
)

PROBE = """
import atexit, json, sys
out = sys.argv.pop(1)
# Loaded modules only: entry.main blocks httpx._main with a None entry (never imported).
atexit.register(
    lambda: open(out, "w").write(json.dumps(sorted(k for k, v in sys.modules.items() if v)))
)
from vpsnap.cli.entry import main
sys.argv[0] = "vpsnap"
main()
"""


def loaded_by(
    tmp_path: Path, *args: str, env: dict[str, str] | None = None
) -> tuple[set[str], subprocess.CompletedProcess[str]]:
    out = tmp_path / "modules.json"
    done = subprocess.run(
        [sys.executable, "-c", PROBE, str(out), *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
        check=False,
    )
    return set(json.loads(out.read_text())), done


def server_parts(modules: set[str]) -> list[str]:
    return sorted(
        m for m in modules if m.split(".")[0] in SERVER_PACKAGES or m.startswith(SERVER_MODULES)
    )


@pytest.mark.parametrize(
    "args",
    [
        ("--help",),
        ("--version",),
        ("vps", "--help"),
        ("snapshots", "create", "--help"),
        ("jobs", "list", "--help"),
        ("context", "list"),
        ("completion", "bash"),
    ],
)
def test_help_version_and_local_commands_load_no_server_and_no_http(
    tmp_path: Path, args: tuple[str, ...]
) -> None:
    modules, done = loaded_by(tmp_path, *args)
    assert done.returncode == 0, done.stderr
    assert server_parts(modules) == []
    if args in (("--help",), ("--version",)):
        # Not even the SDK: the root help comes from the command table alone.
        assert "httpx" not in modules
        assert "vpsnap.client" not in modules


@pytest.mark.slow
@pytest.mark.qemu
@pytest.mark.parametrize(
    "args",
    [
        ("vps", "list"),
        ("vps", "get", "demo-web", "-o", "yaml"),
        ("snapshots", "list", "demo-db"),
        ("jobs", "list"),
        ("schedules", "get", "demo-web"),
        ("version",),
    ],
)
def test_client_commands_load_no_server(
    tmp_path: Path, api_server: LiveServer, args: tuple[str, ...]
) -> None:
    env = {"VPSNAP_URL": api_server.url, "VPSNAP_API_KEY": api_server.key()}
    modules, done = loaded_by(tmp_path, *args, env=env)
    assert done.returncode == 0, done.stderr
    assert "httpx" in modules  # it did talk to the server
    assert server_parts(modules) == []


@pytest.mark.slow
@pytest.mark.qemu
def test_a_completion_request_loads_no_server_and_a_cached_one_no_http(
    tmp_path: Path, api_server: LiveServer
) -> None:
    env = {
        "VPSNAP_URL": api_server.url,
        "VPSNAP_API_KEY": api_server.key(),
        "_VPSNAP_COMPLETE": "bash_complete",
        "COMP_WORDS": "vpsnap snapshots list demo-",
        "COMP_CWORD": "3",
        "XDG_CACHE_HOME": str(tmp_path / "cache"),
    }
    first, done = loaded_by(tmp_path, env=env)
    assert done.returncode == 0, done.stderr
    assert {"plain,demo-web", "plain,demo-db", "plain,demo-nosnap"} <= set(done.stdout.split())
    assert server_parts(first) == []
    again, done = loaded_by(tmp_path, env=env)
    assert {"plain,demo-web", "plain,demo-db"} <= set(done.stdout.split())
    assert "httpx" not in again  # answered from the cache
    assert server_parts(again) == []


def test_server_commands_say_what_to_install_when_the_server_is_missing(tmp_path: Path) -> None:
    # A client-only install, simulated: the server's packages cannot be found.
    blocker = tmp_path / "sitecustomize.py"
    blocker.write_text(
        "import importlib.util\n"
        "_find = importlib.util.find_spec\n"
        "def find_spec(name, *a, **k):\n"
        "    return None if name.split('.')[0] in {'fastapi', 'sqlalchemy'} else _find(name, *a, **k)\n"
        "importlib.util.find_spec = find_spec\n"
    )
    env = {"PYTHONPATH": f"{tmp_path}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    for args in (("serve", "--demo"), ("admin", "vps", "list")):
        modules, done = loaded_by(tmp_path, *args, env=env)
        assert done.returncode == 1
        assert "pip install 'vpsnap[server]'" in done.stderr
        assert server_parts(modules) == []


def test_server_logging_loads_no_rich_traceback_until_an_exception_is_printed() -> None:
    # structlog would import rich's traceback renderer and Pygments at every server start
    # (~0.1 s of CPU) for console logs only; vpsnap.logging loads them on the first exception
    # a console log prints, and the client's rich (tables) is untouched.
    probe = (
        "import sys\n"
        "from vpsnap.logging import configure_logging\n"
        "import structlog\n"
        "configure_logging('info', 'console')\n"
        "before = sorted(m for m in sys.modules if m.startswith(('pygments', 'rich')))\n"
        "try:\n"
        "    1 / 0\n"
        "except ZeroDivisionError:\n"
        "    structlog.get_logger('probe').exception('boom')\n"
        "import rich.table\n"
        "print(before, file=sys.stdout)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stdout.strip() == "[]"
    assert "boom" in done.stderr
    assert "Traceback" in done.stderr and "ZeroDivisionError" in done.stderr


# Not on vpsnap serve's start-up (docs/performance.md, "Start-up and pacing"): the panel
# (installed on its first request), httpx (webhooks and billing import it when they send),
# SQLAlchemy's PostgreSQL dialect on SQLite, Alembic on a current database, rich's tracebacks.
NOT_AT_SERVE_START = (
    "jinja2",
    "vpsnap.dashboard.web",
    "vpsnap.dashboard.pages",
    "httpx",
    "sqlalchemy.dialects.postgresql",
    "alembic",
    "pygments",
    "rich.traceback",
)


VPSNAP = (sys.executable, "-m", "vpsnap.cli")
PROBED = (sys.executable, "-c", PROBE)


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _serve_and_list_modules(tmp_path: Path, paths: tuple[str, ...]) -> set[str]:
    """Start ``vpsnap serve`` on a migrated SQLite data dir, GET ``paths`` once it answers,
    stop it with SIGTERM; the modules it had imported by then."""
    import signal
    import time
    import urllib.error
    import urllib.request

    data = tmp_path / "var"
    env = {k: v for k, v in os.environ.items() if not k.startswith("VPSNAP_")}
    # Migrated by another process first: a fresh database would load Alembic to migrate.
    subprocess.run(
        [*VPSNAP, "admin", "account", "create", "probe", "--data-dir", str(data)],
        env=env,
        capture_output=True,
        timeout=120,
        check=True,
    )
    out = tmp_path / "modules.json"
    port = _free_port()
    log = tmp_path / "serve.log"
    with log.open("wb") as sink:
        server = subprocess.Popen(
            [*PROBED, str(out), "serve", "--port", str(port), "--data-dir", str(data)],
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5):
                    break
            except OSError:
                assert server.poll() is None, log.read_text()
                assert time.monotonic() < deadline, "vpsnap serve did not answer in 60 s"
                time.sleep(0.05)
        for path in paths:
            request = urllib.request.Request(
                f"http://127.0.0.1:{port}{path}", headers={"Accept": "text/html"}
            )
            try:
                with urllib.request.urlopen(request, timeout=10) as answer:
                    assert answer.status == 200, path
            except urllib.error.HTTPError as exc:
                assert exc.code == 401, (path, exc.code)  # the API, without a key
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=60)
    return set(json.loads(out.read_text()))


def test_serve_starts_without_the_panel_httpx_or_the_postgresql_dialect(tmp_path: Path) -> None:
    modules = _serve_and_list_modules(tmp_path, ("/healthz", "/api/v2/vps", "/openapi.json"))
    assert "vpsnap.api.app" in modules and "fastapi" in modules  # it did serve
    assert sorted(m for m in modules if m.startswith(NOT_AT_SERVE_START)) == []


def test_serve_loads_the_panel_on_its_first_page(tmp_path: Path) -> None:
    modules = _serve_and_list_modules(tmp_path, ("/api/v2/vps", "/login"))
    assert {"jinja2", "vpsnap.dashboard.web", "vpsnap.dashboard.pages"} <= modules
