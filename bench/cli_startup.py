"""How fast does ``vpsnap`` start? Median wall time of ``vpsnap --help``, ``vpsnap vps list``
(against a demo server this script starts) and shell completion requests, each next to
``python -c "import httpx"`` measured in the same run, as ratios. Target (issue 13): within
1.5x of that baseline (and under a second). A second reference row, httpx imported without
its own command line (which ``vpsnap`` blocks, see ``vpsnap.cli.entry.main``), shows how much
of the baseline that is.

    .venv/bin/python bench/cli_startup.py                 # 15 rounds
    .venv/bin/python bench/cli_startup.py --rounds 5      # quick check

Each round runs every command once, in turn, so a busy neighbour slows all of them alike;
the median over the rounds is reported. Commands run as subprocesses of the venv's console
script, fork and exec included, as a user pays them.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from common import BenchError, fmt_ratio, free_port, progress, render_table

VENV_BIN = Path(sys.executable).parent
VPSNAP = str(VENV_BIN / "vpsnap")
TARGET_RATIO = 1.5
TARGET_SECONDS = 1.0


def timed(cmd: list[str], env: dict[str, str]) -> float:
    started = time.perf_counter()
    done = subprocess.run(cmd, env=env, capture_output=True, check=False, timeout=60)
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        raise BenchError(f"{' '.join(cmd)} exited {done.returncode}: {done.stderr.decode()[-500:]}")
    return elapsed * 1000


def start_server(work: Path, env: dict[str, str]) -> tuple[subprocess.Popen[bytes], str, str]:
    port = free_port()
    data = work / "var"
    log = (work / "server.log").open("wb")
    process = subprocess.Popen(
        [VPSNAP, "serve", "--demo", "--port", str(port), "--data-dir", str(data)],
        env=env | {"VPSNAP_DEMO_VM": "false", "VPSNAP_LOG_LEVEL": "warning"},
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                key = json.loads((data / "demo-tokens.json").read_text())["full"]
                return process, url, key
        except httpx.TransportError:
            pass
        if process.poll() is not None:
            break
        time.sleep(0.1)
    process.terminate()
    raise BenchError(f"vpsnap serve did not start: {(work / 'server.log').read_text()[-2000:]}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=15, help="timed rounds (default 15)")
    parser.add_argument("--warmup", type=int, default=2, help="rounds run first and discarded")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="vpsnap-cli-bench-"))
    base_env = {k: v for k, v in os.environ.items() if not k.startswith("VPSNAP_")}
    base_env |= {"VPSNAP_CONFIG": str(work / "config.toml"), "COLUMNS": "200"}
    process, url, key = start_server(work, base_env)
    try:
        client_env = base_env | {"VPSNAP_URL": url, "VPSNAP_API_KEY": key}
        completion = client_env | {
            "_VPSNAP_COMPLETE": "bash_complete",
            "COMP_WORDS": "vpsnap snapshots list demo-",
            "COMP_CWORD": "3",
        }
        cold_cache = work / "cache-cold"
        warm_cache = work / "cache-warm"
        cases = [
            (
                "python -c 'import httpx' (baseline)",
                [sys.executable, "-c", "import httpx"],
                base_env,
            ),
            (
                "python -c 'import httpx', without httpx's own CLI",
                [
                    sys.executable,
                    "-c",
                    "import sys; sys.modules['httpx._main'] = None; import httpx",
                ],
                base_env,
            ),
            ("vpsnap --help", [VPSNAP, "--help"], base_env),
            ("vpsnap vps list", [VPSNAP, "vps", "list"], client_env),
            ("vpsnap snapshots list demo-db", [VPSNAP, "snapshots", "list", "demo-db"], client_env),
            (
                "completion of VPS names, cache cold (asks the server)",
                [VPSNAP],
                completion | {"XDG_CACHE_HOME": str(cold_cache)},
            ),
            (
                "completion of VPS names, cache warm (< 30 s old)",
                [VPSNAP],
                completion | {"XDG_CACHE_HOME": str(warm_cache)},
            ),
        ]
        samples: dict[str, list[float]] = {name: [] for name, _, _ in cases}
        for number in range(args.warmup + args.rounds):
            progress(f"round {number + 1}/{args.warmup + args.rounds}")
            for name, cmd, env in cases:
                shutil.rmtree(cold_cache, ignore_errors=True)
                elapsed = timed(cmd, env)
                if number >= args.warmup:
                    samples[name].append(elapsed)
    finally:
        process.terminate()
        process.wait(timeout=30)
        shutil.rmtree(work, ignore_errors=True)

    baseline = statistics.median(samples[cases[0][0]])
    rows = []
    missed = []
    for name, _, _ in cases:
        median = statistics.median(samples[name])
        ratio = median / baseline
        rows.append(
            [
                name,
                f"{median:.0f}",
                f"{min(samples[name]):.0f}",
                f"{max(samples[name]):.0f}",
                fmt_ratio(ratio),
            ]
        )
        measured = not name.startswith("python")  # the references are not judged
        if measured and (ratio > TARGET_RATIO or median > TARGET_SECONDS * 1000):
            missed.append(name)
    print(f"{args.rounds} rounds, {os.cpu_count()} CPUs, Python {sys.version.split()[0]}")
    print(render_table(["command", "median ms", "min ms", "max ms", "vs baseline"], rows))
    print(
        f"target: every command within {TARGET_RATIO}x of the baseline and under "
        f"{TARGET_SECONDS:g} s: {'MISSED by ' + ', '.join(missed) if missed else 'met'}"
    )
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
