"""The systemd units in contrib/systemd/: each passes ``systemd-analyze verify`` without a
warning, follows the hardening pattern of vpsnap.service, and starts a vpsnap command that
exists. A new unit dropped in that directory is checked the same way."""

from __future__ import annotations

import configparser
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

UNITS = Path(__file__).resolve().parents[2] / "contrib" / "systemd"
INSTALLED_BINARY = "/opt/vpsnap/bin/vpsnap"
VPSNAP = str(Path(sys.executable).with_name("vpsnap"))

# What every vpsnap unit's [Service] sets (docs/operations.md, "Install as a service").
HARDENING = {
    "ProtectSystem": "strict",
    "ProtectHome": "yes",
    "PrivateTmp": "yes",
    "NoNewPrivileges": "yes",
    "ProtectKernelTunables": "yes",
    "ProtectKernelModules": "yes",
    "ProtectControlGroups": "yes",
    "RestrictSUIDSGID": "yes",
    "LockPersonality": "yes",
    "SystemCallArchitectures": "native",
    "UMask": "0077",
    "CapabilityBoundingSet": "",
}


def unit_files() -> list[Path]:
    return sorted(p for p in UNITS.iterdir() if p.suffix in (".service", ".socket", ".timer"))


def service_section(path: Path) -> dict[str, list[str]]:
    """The [Service] keys of a unit (a key may repeat: every value is kept)."""
    values: dict[str, list[str]] = {}
    section = None
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        if section == "Service":
            key, _, value = line.partition("=")
            values.setdefault(key.strip(), []).append(value.strip())
    return values


def test_there_are_units() -> None:
    names = {unit.name for unit in unit_files()}
    # The embedded server, and the scale-out processes (docs/scale-out.md).
    assert {
        "vpsnap.service",
        "vpsnap-api.service",
        "vpsnap-agent@.service",
        "vpsnap-scheduler.service",
    } <= names
    # Sanity of the reader on the real file.
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string((UNITS / "vpsnap.service").read_text())
    assert parser["Install"]["WantedBy"] == "multi-user.target"


@pytest.mark.parametrize("unit", unit_files(), ids=lambda p: p.name)
def test_the_unit_verifies_cleanly(unit: Path, tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        print("\n!! systemd-analyze is missing: scripts/install installs it (package systemd)")
        pytest.skip("systemd-analyze is not installed")
    # verify checks that ExecStart's program exists: point it at this checkout's vpsnap.
    names = [unit.name]
    if unit.name.endswith("@" + unit.suffix):
        # A template: also an instance of it, with %i filled in (the node's name).
        names.append(unit.name.replace("@.", "@hv-1."))
    for name in names:
        copy = tmp_path / name
        copy.write_text(unit.read_text().replace(INSTALLED_BINARY, VPSNAP))
        result = subprocess.run(
            [analyze, "verify", str(copy)], capture_output=True, text=True, check=False
        )
        assert result.returncode == 0, result.stderr
        # Unknown keys and bad values are only warnings, with exit code 0: none is allowed.
        assert result.stderr.strip() == "", result.stderr


@pytest.mark.parametrize(
    "unit", [u for u in unit_files() if u.suffix == ".service"], ids=lambda p: p.name
)
def test_the_unit_is_hardened(unit: Path) -> None:
    service = service_section(unit)
    for key, value in HARDENING.items():
        assert service.get(key) == [value], f"{unit.name}: {key}={value} expected"
    # Its own user (or a dynamic one), its state under /var/lib, never root.
    assert "User" in service or service.get("DynamicUser") == ["yes"], unit.name
    assert service.get("User") != ["root"]
    assert "StateDirectory" in service, unit.name
    assert service.get("StateDirectoryMode") == ["0700"], unit.name
    # Stopping waits longer than the shutdown grace of running jobs (30 s by default).
    assert int(service["TimeoutStopSec"][0]) > 30, unit.name


@pytest.mark.parametrize(
    "unit", [u for u in unit_files() if u.suffix == ".service"], ids=lambda p: p.name
)
def test_the_unit_runs_a_vpsnap_command_that_exists(unit: Path) -> None:
    [exec_start] = service_section(unit)["ExecStart"]
    program, *args = exec_start.split()
    assert program == INSTALLED_BINARY
    assert args[:2] == ["--config", "/etc/vpsnap/vpsnap.toml"]
    # The command line as the unit has it, asked for help (so nothing starts).
    result = subprocess.run(
        [VPSNAP, *args, "--help"], capture_output=True, text=True, check=False, timeout=60
    )
    assert result.returncode == 0, result.stderr
