"""How QemuImg starts its tools: through ``setpriv --pdeathsig`` and a parent check, without a
``preexec_fn`` (so CPython uses vfork, not a fork of the whole server), and the tool still dies
with the server (drivers/qemu_img.py, ``_Launcher``; docs/performance.md, "The job path")."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from vpsnap.domain.errors import HypervisorError
from vpsnap.drivers import qemu_img as qemu_img_module
from vpsnap.drivers.qemu_img import QemuImg

pytestmark = pytest.mark.qemu


@pytest.fixture
def setpriv_prefix() -> tuple[str, ...]:
    prefix = qemu_img_module._probe_setpriv()
    if prefix is None:
        # The fallback (preexec_fn) is what runs then; test_the_tool_dies_with_its_parent
        # covers it. This host has util-linux 2.38 in CI, so this is a broken environment.
        pytest.fail("setpriv with --pdeathsig is not usable here; install util-linux >= 2.33")
    return prefix


async def test_tools_start_without_a_preexec_fn(
    monkeypatch: pytest.MonkeyPatch, setpriv_prefix: tuple[str, ...]
) -> None:
    """A preexec_fn makes CPython fork() the server (10-30 ms at its size); none is passed."""
    seen: list[tuple[tuple[Any, ...], dict[str, Any]]] = []
    real = asyncio.create_subprocess_exec

    async def recording(*args: Any, **kwargs: Any) -> asyncio.subprocess.Process:
        seen.append((args, kwargs))
        return await real(*args, **kwargs)

    monkeypatch.setattr(asyncio, "create_subprocess_exec", recording)
    assert (await QemuImg().version()).startswith("qemu-img version")
    [(args, kwargs)] = seen
    assert "preexec_fn" not in kwargs
    assert kwargs["start_new_session"] is True
    assert args[: len(setpriv_prefix)] == setpriv_prefix
    assert "--pdeathsig" in args
    assert args[len(setpriv_prefix) :] == (str(os.getpid()), "qemu-img", "--version")


def _slow_tool(tmp_path: Path) -> tuple[Path, Path]:
    pid_file = tmp_path / "tool.pid"
    tool = tmp_path / "slow-tool"
    # exec: the pid written is the pid QemuImg started (the death signal is that process's).
    tool.write_text(f"#!/bin/sh\necho $$ > {pid_file}\nexec sleep 30\n")
    tool.chmod(0o755)
    return tool, pid_file


def _is_gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1]
    except FileNotFoundError:
        return True
    return state.startswith("Z")  # killed; init has not reaped it yet


@pytest.mark.parametrize("launch", ["setpriv", "preexec_fn"])
def test_the_tool_dies_with_its_parent(tmp_path: Path, launch: str) -> None:
    """kill -9 of the process running QemuImg: its tool is killed by the kernel, both ways."""
    tool, pid_file = _slow_tool(tmp_path)
    fallback = "qemu_img._LAUNCHER._probed = True; " if launch == "preexec_fn" else ""
    script = (
        "import asyncio\n"
        "from vpsnap.drivers import qemu_img\n"
        f"{fallback}\n"
        f"asyncio.run(qemu_img.QemuImg({str(tool)!r}, timeout=60).version())\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", script])
    try:
        deadline = time.monotonic() + 30
        while not pid_file.exists() or not pid_file.read_text().strip():
            assert parent.poll() is None, "the parent exited before starting the tool"
            assert time.monotonic() < deadline, "the tool never started"
            time.sleep(0.05)
        child = int(pid_file.read_text())
        assert not _is_gone(child)
        parent.send_signal(signal.SIGKILL)
        parent.wait(10)
        for _ in range(100):
            if _is_gone(child):
                break
            time.sleep(0.05)
        assert _is_gone(child), f"the tool ({child}) outlived its killed parent"
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait(10)


def test_the_parent_check_starts_nothing_for_another_parent(
    tmp_path: Path, setpriv_prefix: tuple[str, ...]
) -> None:
    """If vpsnap died before setpriv set the death signal, the tool's parent is no longer
    vpsnap's pid: the check exits 125 and the tool never runs."""
    marker = tmp_path / "ran"
    not_the_parent = str(os.getpid() + 1_000_000)
    done = subprocess.run(
        [*setpriv_prefix, not_the_parent, "touch", str(marker)], check=False, timeout=10
    )
    assert done.returncode == 125
    assert not marker.exists()
    ran = subprocess.run(
        [*setpriv_prefix, str(os.getpid()), "touch", str(marker)], check=False, timeout=10
    )
    assert ran.returncode == 0
    assert marker.exists()


async def test_a_tool_that_is_not_executable(tmp_path: Path) -> None:
    tool = tmp_path / "qemu-img"
    tool.write_text("#!/bin/sh\nexit 0\n")
    tool.chmod(0o644)
    with pytest.raises(HypervisorError, match="cannot be run on this host") as caught:
        await QemuImg(str(tool)).version()
    assert f"qemu-img at {tool} is not executable" in (caught.value.log_detail or "")


async def test_a_tool_of_its_own_exiting_127_is_not_reported_missing(tmp_path: Path) -> None:
    """127 and 126 are also what sh answers when it cannot exec the tool; a tool that exists
    and exits so is an ordinary failure."""
    tool = tmp_path / "qemu-img"
    tool.write_text("#!/bin/sh\necho 'broken in its own way' >&2\nexit 127\n")
    tool.chmod(0o755)
    with pytest.raises(HypervisorError) as caught:
        await QemuImg(str(tool)).version()
    assert "not installed" not in caught.value.detail
    assert "broken in its own way" in (caught.value.log_detail or "")
