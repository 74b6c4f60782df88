"""Packaging: ``uv build`` makes a wheel and an sdist; the wheel installs as ``pipx install
vpsnap`` would (a fresh venv of its own, nothing of the project's) and, without extras, the SDK
and the client commands work while none of the server's dependencies is there.

No network: the install resolves offline from uv's cache (``uv pip install --offline``), which
``uv sync`` of this project has filled with the client's distributions. (The ``server`` extra
is not installed this way: not all of its wheels are kept in the cache here, e.g. asyncpg.)"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.live_server import LiveServer

pytestmark = [pytest.mark.slow, pytest.mark.qemu]

REPO = Path(__file__).resolve().parents[2]
SERVER_ONLY = ("fastapi", "sqlalchemy", "uvicorn", "pydantic_settings", "structlog", "alembic")


def uv() -> list[str]:
    found = shutil.which("uv")
    return [found] if found else [sys.executable, "-m", "uv"]


def run(*args: str | Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(a) for a in args],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env={**os.environ, **(env or {})},
    )


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``uv build``: the wheel and the sdist."""
    out = tmp_path_factory.mktemp("dist")
    built = run(*uv(), "build", "--out-dir", out, REPO)
    assert built.returncode == 0, built.stderr
    return out


def isolated_install(work: Path, requirement: str) -> Path:
    """A fresh venv (as pipx makes one per application) with ``requirement`` installed
    offline; its bin directory."""
    venv = work / "venv"
    made = run(*uv(), "venv", "--quiet", "--python", sys.executable, venv)
    assert made.returncode == 0, made.stderr
    # Not the project's venv: nothing inherited from it, and no editable source on the path.
    installed = run(
        *uv(), "pip", "install", "--offline", "--quiet", "--python", venv / "bin/python",
        requirement,
    )  # fmt: skip
    assert installed.returncode == 0, installed.stderr
    return venv / "bin"


@pytest.fixture(scope="module")
def sdk_venv(tmp_path_factory: pytest.TempPathFactory, dist: Path) -> Iterator[Path]:
    """The wheel installed without extras (``pipx install vpsnap``)."""
    [wheel] = dist.glob("vpsnap-*.whl")
    yield isolated_install(tmp_path_factory.mktemp("sdk-only"), str(wheel))


def test_uv_build_makes_a_wheel_and_an_sdist(dist: Path) -> None:
    [wheel] = dist.glob("vpsnap-*-py3-none-any.whl")
    [sdist] = dist.glob("vpsnap-*.tar.gz")
    listed = run("tar", "tzf", sdist).stdout
    assert "/src/vpsnap/cli/entry.py" in listed
    assert "/var/" not in listed  # no demo data or venv in what is published
    assert "/.venv/" not in listed
    names = run(sys.executable, "-m", "zipfile", "-l", wheel).stdout
    assert "vpsnap/cli/commands/admin/vps.py" in names
    assert "vpsnap/py.typed" in names


def test_version_and_vps_list_from_the_installed_command(
    sdk_venv: Path, server: LiveServer
) -> None:
    from vpsnap import __version__

    version = run(sdk_venv / "vpsnap", "--version", env={"PYTHONPATH": ""})
    assert version.returncode == 0, version.stderr
    assert version.stdout.strip() == f"vpsnap, version {__version__}"
    env = {"VPSNAP_URL": server.url, "VPSNAP_API_KEY": server.key(), "PYTHONPATH": ""}
    listed = run(sdk_venv / "vpsnap", "vps", "list", env=env)
    assert listed.returncode == 0, listed.stderr
    assert "demo-web" in listed.stdout


def test_the_sdk_imports_without_the_server_dependencies(sdk_venv: Path) -> None:
    probe = (
        "import importlib.util, json, sys, vpsnap.client;"
        f"print(json.dumps({{m: importlib.util.find_spec(m) is not None for m in {SERVER_ONLY}}}));"
        "print(vpsnap.client.__file__)"
    )
    result = run(sdk_venv / "python", "-c", probe, env={"PYTHONPATH": ""})
    assert result.returncode == 0, result.stderr
    found, location = result.stdout.splitlines()
    assert json.loads(found) == dict.fromkeys(SERVER_ONLY, False)
    assert str(sdk_venv.parent) in location  # the installed wheel, not the source tree


def test_the_sdk_talks_to_a_server_from_there(sdk_venv: Path, server: LiveServer) -> None:
    script = (
        "from vpsnap.client import Client;"
        "c = Client();"
        "print(c.snapshots.list('demo-web').limits.total_snapshots)"
    )
    env = {"VPSNAP_URL": server.url, "VPSNAP_API_KEY": server.key(), "PYTHONPATH": ""}
    result = run(sdk_venv / "python", "-c", script, env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "3"


def test_the_client_commands_work_and_the_server_ones_say_what_to_install(
    sdk_venv: Path, server: LiveServer
) -> None:
    env = {"VPSNAP_URL": server.url, "VPSNAP_API_KEY": server.key(), "PYTHONPATH": ""}
    listed = run(sdk_venv / "vpsnap", "vps", "list", "--output", "json", env=env)
    assert listed.returncode == 0, listed.stderr
    names = {v["name"] for v in json.loads(listed.stdout)["data"]}
    assert names >= {"demo-web", "demo-db", "demo-nosnap"}  # and those other tests added
    assert "other-web" not in names
    for command in (["serve", "--demo"], ["admin", "vps", "list"]):
        refused = run(sdk_venv / "vpsnap", *command, env=env)
        assert refused.returncode == 1
        assert "pip install 'vpsnap[server]'" in refused.stderr
