"""How fast does ``vpsnap serve`` answer, and stop? Time from the spawn to the first answered
``GET /api/v2/vps`` on a small SQLite data dir, and from SIGTERM to the process's exit, next to
a bare server measured in the same run: FastAPI on uvicorn with a SQLAlchemy async engine on
aiosqlite (what vpsnap cannot serve without), answering one route from the database.

    .venv/bin/python bench/serve_startup.py               # 10 rounds
    .venv/bin/python bench/serve_startup.py --rounds 5    # quick check

Each round starts the bare server and then ``vpsnap serve`` (one after the other, so a busy
neighbour slows both alike); the medians over the rounds are reported with their ratio.
Target (issue 15): answering within 2 s of the spawn. The interpreter's environment is passed
on as it is: with ``PYTHONDONTWRITEBYTECODE=1`` and no ``.pyc`` files every start compiles its
sources again (scripts/install writes them).
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from common import (
    BenchError,
    create_account_and_key,
    fmt_ratio,
    free_port,
    progress,
    render_table,
    server_env,
    vpsnap_command,
)

TARGET_S = 2.0

BARE = """
import sys
import sqlalchemy as sa
import uvicorn
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import create_async_engine

engine = create_async_engine("sqlite+aiosqlite:///" + sys.argv[2])
app = FastAPI()


@app.get("/api/v2/vps")
async def vps() -> dict[str, object]:
    async with engine.connect() as conn:
        rows = (await conn.execute(sa.text("SELECT id, name FROM vps LIMIT 20"))).all()
    return {"data": [dict(r._mapping) for r in rows]}


uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning")
"""


def first_answer(
    cmd: list[str], env: dict[str, str], port: int, key: str, log: Path
) -> tuple[float, float]:
    """Seconds from the spawn to the first 200 of the list, and from SIGTERM to the exit."""
    url = f"http://127.0.0.1:{port}/api/v2/vps?limit=20"
    headers = {"Authorization": f"Bearer {key}"}
    with log.open("wb") as out:
        started = time.perf_counter()
        process = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        answered = None
        deadline = time.monotonic() + 60
        with httpx.Client(timeout=10) as client:
            while answered is None and time.monotonic() < deadline:
                if process.poll() is not None:
                    raise BenchError(f"{cmd} exited: {log.read_text()[-2000:]}")
                try:
                    if client.get(url, headers=headers).status_code == 200:
                        answered = time.perf_counter() - started
                except httpx.TransportError:
                    time.sleep(0.01)
        if answered is None:
            raise BenchError(f"{cmd} did not answer in 60 s: {log.read_text()[-2000:]}")
        asked = time.perf_counter()
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)
        return answered, time.perf_counter() - asked
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--rounds", type=int, default=10, help="timed rounds (default 10)")
    parser.add_argument("--warmup", type=int, default=1, help="rounds run first and discarded")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="vpsnap-serve-bench-"))
    data = work / "var"
    env = server_env()
    progress("preparing the data dir (account, key)")
    key = create_account_and_key(data, env, "bench")
    database = data / "vpsnap.db"
    if not database.exists():
        raise BenchError(f"no SQLite database at {database}")
    cases = {
        "bare FastAPI + SQLAlchemy on uvicorn": [sys.executable, "-c", BARE],
        "vpsnap serve": [*vpsnap_command(), "serve", "--data-dir", str(data), "--port"],
    }
    answer: dict[str, list[float]] = {name: [] for name in cases}
    stop: dict[str, list[float]] = {name: [] for name in cases}
    try:
        for number in range(args.warmup + args.rounds):
            progress(f"round {number + 1}/{args.warmup + args.rounds}")
            for name, cmd in cases.items():
                port = free_port()
                full = [*cmd, str(port)]
                if name.startswith("bare"):
                    full.append(str(database))
                first, stopped = first_answer(full, env, port, key, work / "server.log")
                if number >= args.warmup:
                    answer[name].append(first)
                    stop[name].append(stopped)
    finally:
        subprocess.run(["rm", "-rf", str(work)], check=False)

    bare = statistics.median(answer[next(iter(cases))])
    rows = [
        [
            name,
            f"{statistics.median(answer[name]):.2f}",
            f"{min(answer[name]):.2f}",
            f"{max(answer[name]):.2f}",
            fmt_ratio(statistics.median(answer[name]) / bare),
            f"{statistics.median(stop[name]):.2f}",
            f"{max(stop[name]):.2f}",
        ]
        for name in cases
    ]
    bytecode = "off" if os.environ.get("PYTHONDONTWRITEBYTECODE") else "on"
    print(
        f"{args.rounds} rounds, {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}, "
        f"Python {sys.version.split()[0]}, writing .pyc {bytecode}"
    )
    print(
        render_table(
            [
                "server",
                "answers after (median s)",
                "min",
                "max",
                "vs bare",
                "SIGTERM to exit (median s)",
                "max",
            ],
            rows,
        )
    )
    median = statistics.median(answer["vpsnap serve"])
    met = median < TARGET_S
    print(f"target: vpsnap serve answers within {TARGET_S:g} s: {'met' if met else 'MISSED'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
