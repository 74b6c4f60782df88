"""`vpsnap admin vps add` and `import-libvirt` refuse a disk file that is given twice or
already belongs to a VPS (issue 9, kind 4): both go through ``AccountService.add_vps``."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner

from tests.cli.test_libvirt_import import all_vps, image, lab  # noqa: F401 - fixture
from tests.drivers.libvirt_lab import URI, LibvirtLab
from vpsnap.cli.entry import cli as app

pytestmark = pytest.mark.qemu
runner = CliRunner()


def vpsnap(data_dir: Path, *args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, [*args, "--data-dir", str(data_dir)])
    return result.exit_code, result.stdout, result.stderr


def qcow2(path: Path) -> Path:
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(path), "16M"], check=True)
    return path


def add(data: Path, account: str, name: str, *disks: Path | str) -> tuple[int, str, str]:
    args = ["admin", "vps", "add", "--account", account, "--name", name, "--slots", "1"]
    for disk in disks:
        args += ["--disk", str(disk)]
    return vpsnap(data, *args)


def test_vps_add_refuses_a_disk_twice_or_of_another_vps(tmp_path: Path) -> None:
    data = tmp_path / "data"
    for account in ("acme", "other"):
        assert vpsnap(data, "admin", "account", "create", account)[0] == 0
    x = qcow2(tmp_path / "x.qcow2")

    # The reproduction: `--disk X --disk X` was accepted.
    code, _, err = add(data, "acme", "web", x, x)
    assert code == 2  # invalid input (docs/cli.md, exit codes)
    assert "given twice" in err

    code, out, err = add(data, "acme", "web", x)
    assert code == 0, err
    vps_id = out.split("(")[1].rstrip(")\n")

    (tmp_path / "sub").mkdir()
    link = tmp_path / "sub" / "link.qcow2"
    link.symlink_to(x)
    hard = tmp_path / "sub" / "hard.qcow2"
    os.link(x, hard)
    for alias in (x, link, hard, tmp_path / "sub" / ".." / "x.qcow2"):
        code, _, err = add(data, "other", "copy", alias)
        assert code == 4, alias  # a conflict
        assert f"already belongs to VPS web ({vps_id}) of account acme" in err, err
    assert [v.name for v in all_vps(data)] == ["web"]


@pytest.mark.libvirt
def test_import_libvirt_skips_a_domain_whose_disk_is_registered(
    lab: LibvirtLab,  # noqa: F811 - the fixture
    tmp_path: Path,
) -> None:
    data = tmp_path / "data"
    assert vpsnap(data, "admin", "account", "create", "acme")[0] == 0
    assert vpsnap(data, "admin", "account", "create", "other")[0] == 0
    shared = image(tmp_path / "shared.qcow2")
    domain = lab.define((shared,))
    code, _, err = add(data, "acme", "web", shared)
    assert code == 0, err

    code, out, err = vpsnap(
        data,
        "admin",
        "vps",
        "import-libvirt",
        "--uri",
        URI,
        "--account",
        "other",
        "--domain",
        domain.name,
    )
    assert code == 0, err
    assert "skipped" in out
    assert "already belongs to VPS web" in " ".join(out.split())
    assert [v.name for v in all_vps(data)] == ["web"]
