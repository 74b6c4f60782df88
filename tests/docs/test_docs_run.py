"""The docs run as written: the README walkthrough and the tutorial (their ``sh`` blocks, each
run literally by bash) and the ``python`` examples of docs/sdk.md, against a real demo server
(``vpsnap serve --demo``) on a free port, twice in a row on the same demo data.

The shell runs where a user would be: in a directory holding the demo's ``var/`` and the
project's ``.venv`` (a link to this one), with ``API`` set to the server's URL, as the docs say
to do for a port other than 8080, and a home of its own (contexts, completion cache). Questions
are answered ``y`` on stdin, as a user following the tutorial types. The tutorial's first
block (``./scripts/demo``, which installs and starts the server) is the one not run: the test
starts that server itself. The demo VM is off (``VPSNAP_DEMO_VM=false``): a VM would outlive
the test; the walkthrough is the same on a disk-only demo-web.
"""

from __future__ import annotations

import os
import pty
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import pytest

from tests.live_server import LiveServer

pytestmark = [pytest.mark.slow, pytest.mark.qemu]

REPO = Path(__file__).resolve().parents[2]
BLOCK = re.compile(r"^```(\w+)\n(.*?)^```", re.MULTILINE | re.DOTALL)


def blocks(document: Path, language: str, *, section: str | None = None) -> list[str]:
    text = document.read_text()
    if section is not None:
        start = text.index(section)
        end = text.find("\n## ", start + len(section))
        text = text[start : end if end != -1 else None]
    return [body for lang, body in BLOCK.findall(text) if lang == language]


@pytest.fixture
def demo(tmp_path: Path) -> Iterator[tuple[LiveServer, Path, dict[str, str]]]:
    (tmp_path / "var").mkdir()
    (tmp_path / ".venv").symlink_to(REPO / ".venv")
    home = tmp_path / "home"
    home.mkdir()
    # As docs/sdk.md says to start the demo for its webhook example (a receiver on loopback).
    server = LiveServer(tmp_path / "var", VPSNAP_WEBHOOK_ALLOWED_NETWORKS="127.0.0.1/32")
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("VPSNAP_") and key != "VIRTUAL_ENV"
    }
    env |= {
        "API": server.url,
        "HOME": str(home),
        "XDG_CONFIG_HOME": str(home / ".config"),
        "XDG_CACHE_HOME": str(home / ".cache"),
        "COLUMNS": "200",
    }
    try:
        yield server, tmp_path, env
    finally:
        server.stop()


def run_session(bodies: list[str], cwd: Path, env: dict[str, str]) -> list[tuple[int, str]]:
    """Run the blocks one after the other in one bash session, as a user types them into one
    terminal (variables and `source` carry over); each block's exit code (its last command's)
    and what it printed, stdout and stderr."""
    script = ["set -o pipefail"]
    for number, body in enumerate(bodies):
        script += [body, f'echo "@@{number} $?@@"', f'echo "@@{number}@@" >&2']
    # Each question is answered "y" on a terminal when it is asked, as a user types it (given
    # all at once, through a pipe or ahead of time, the first reader would swallow them all).
    keyboard, terminal = pty.openpty()
    process = subprocess.Popen(
        ["bash", "-c", "\n".join(script)],
        cwd=cwd,
        env=env,
        stdin=terminal,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    captured: dict[str, list[str]] = {"out": [], "err": []}

    def pump(stream: IO[str], name: str) -> None:
        line = ""
        while chunk := stream.read(1):
            captured[name].append(chunk)
            line = "" if chunk == "\n" else line + chunk
            if line.endswith("[y/N]: "):
                os.write(keyboard, b"y\n")

    pumps = [
        threading.Thread(target=pump, args=(process.stdout, "out")),
        threading.Thread(target=pump, args=(process.stderr, "err")),
    ]
    for thread in pumps:
        thread.start()
    try:
        process.wait(timeout=600)
    finally:
        process.kill()
        for thread in pumps:
            thread.join(timeout=10)
        for stream in (process.stdout, process.stderr):
            if stream is not None:
                stream.close()
        os.close(keyboard)
        os.close(terminal)
    done = subprocess.CompletedProcess(
        process.args, process.returncode, "".join(captured["out"]), "".join(captured["err"])
    )
    results = []
    out, err = done.stdout, done.stderr
    for number in range(len(bodies)):
        marker = re.search(rf"@@{number} (\d+)@@\n", out)
        assert marker is not None, f"block {number} did not finish:\n{out}\n{err}"
        printed, out = out[: marker.start()], out[marker.end() :]
        said, _, err = err.partition(f"@@{number}@@\n")
        results.append((int(marker.group(1)), printed + said))
    return results


def check(
    result: tuple[int, str], body: str, expected: tuple[str, ...], exit_code: int = 0
) -> None:
    code, said = result
    assert code == exit_code, f"$ {body}\nexit {code}:\n{said}"
    for text in expected:
        assert text in said, f"$ {body}\nexpected {text!r} in:\n{said}"


def test_the_readme_walkthrough_runs_twice(
    demo: tuple[LiveServer, Path, dict[str, str]],
) -> None:
    _, cwd, env = demo
    [walkthrough] = blocks(REPO / "README.md", "sh", section="## Walkthrough")
    for result in run_session([walkthrough, walkthrough], cwd, env):
        check(result, walkthrough, ("before-upgrade", '"canCreate":{"allowed":true'))
        assert re.findall(r"job job_\w{26}: (\w+)", result[1]) == ["completed"] * 3, result[1]


TUTORIAL_EXPECTS: tuple[tuple[object, ...], ...] = (
    ("context demo saved", "demo-db", "203.0.113.11"),
    ("demo-db: 0 of 1 snapshot slots used", "create: yes"),
    ("snapshot 'before-upgrade' of demo-db: available, expires in 23 h",),
    ("before-upgrade",),
    # The last read exits 1: the data is broken, as the step says.
    (1, "read 1048576/1048576 bytes", "Pattern verification failed"),
    ("Roll demo-db back to snapshot 'before-upgrade'", "restored demo-db to snapshot"),
    ("read 1048576/1048576 bytes",),
    ("all 1 snapshot slot(s) of demo-db are used", "--make-room delete-oldest", "exit code 4"),
    (
        "Deleting the oldest snapshot of demo-db, 'before-upgrade'?",
        "snapshot 'after-upgrade' of demo-db: available",
        "1 → 2, 1.00 EUR now",
        "snapshot 'after-upgrade-2' of demo-db: available",
    ),
    ('"totalSnapshots": 2', "nightly"),
    ("snapshot.create (snapshot 'big-one'): completed", "big-one"),
    ("deleted snapshot 'nightly' of demo-db", "demo-db now has 1 snapshot slot(s)"),
)


def test_the_tutorial_runs_twice_on_the_same_demo(
    demo: tuple[LiveServer, Path, dict[str, str]],
) -> None:
    _, cwd, env = demo
    steps = [
        b
        for b in blocks(REPO / "docs/tutorial-first-snapshot.md", "sh")
        if not b.startswith("./scripts/demo")  # starts the server: the test did that
    ]
    assert len(steps) == len(TUTORIAL_EXPECTS), "a block was added: say what it must print"
    results = run_session(steps + steps, cwd, env)
    for body, expected, result in zip(
        steps + steps, TUTORIAL_EXPECTS + TUTORIAL_EXPECTS, results, strict=True
    ):
        if isinstance(expected[0], int):
            check(result, body, expected[1:], expected[0])  # type: ignore[arg-type]
        else:
            check(result, body, expected)  # type: ignore[arg-type]


SDK_EXPECTS = (
    ("demo-web", "demo-db"),
    ("async-example available",),
    ("job_", "None"),
    ("sdk-example available job_",),
    ("snapshot.create succeeded", "whk_", "True", "failed"),
)


def test_the_sdk_examples_run_twice(demo: tuple[LiveServer, Path, dict[str, str]]) -> None:
    server, cwd, env = demo
    env = env | {"VPSNAP_URL": server.url, "VPSNAP_API_KEY": server.key()}
    examples = blocks(REPO / "docs/sdk.md", "python")
    assert len(examples) == len(SDK_EXPECTS), "an example was added: say what it must print"
    for _ in range(2):
        for body, expected in zip(examples, SDK_EXPECTS, strict=True):
            done = subprocess.run(
                [sys.executable, "-c", body],
                cwd=cwd,
                env=env,
                capture_output=True,
                text=True,
                timeout=120,
                check=False,
            )
            check((done.returncode, done.stdout + done.stderr), body, expected)
