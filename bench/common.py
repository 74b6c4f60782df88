"""What the benchmarks in ``bench/`` share: statistics, subprocesses, a ``vpsnap serve`` of their
own, the API calls they time, tables and the JSON file.

Imported as ``common`` by the scripts next to it (run as ``.venv/bin/python bench/NAME.py``, the
script's directory is first on ``sys.path``).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Mapping, Sequence

MIB = 1024**2
GIB = 1024**3
TIB = 1024**4

RESULTS_DIR = Path(__file__).resolve().parent / "results"

SERVER_START_TIMEOUT_S = 30.0
JOB_TIMEOUT_S = 120.0
LONG_POLL_S = 30
HTTP_TIMEOUT_S = LONG_POLL_S + 10.0
SERVER_LOG_TAIL_LINES = 40
COMMAND_TIMEOUT_S = 120.0


class BenchError(Exception):
    """The benchmark itself could not run (as opposed to a missed target)."""


# -- statistics ---------------------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default), ``q`` in [0, 100]."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


@dataclass(frozen=True, slots=True)
class Summary:
    median: float
    p90: float
    n: int

    @classmethod
    def of(cls, values: Sequence[float]) -> Summary:
        return cls(statistics.median(values), percentile(values, 90), len(values))

    def as_dict(self) -> dict[str, float | int]:
        return {"median_ms": round(self.median, 3), "p90_ms": round(self.p90, 3), "n": self.n}


# -- subprocess helpers -------------------------------------------------------------------------


def run(
    cmd: Sequence[str | Path],
    *,
    env: dict[str, str] | None = None,
    timeout: float = COMMAND_TIMEOUT_S,
    pass_fds: Sequence[int] = (),
) -> str:
    """Run a command to completion; its stdout, or BenchError with its output on failure."""
    try:
        result = subprocess.run(
            [str(c) for c in cmd],
            capture_output=True,
            text=True,
            env=env,
            check=False,
            timeout=timeout,
            pass_fds=pass_fds,
        )
    except subprocess.TimeoutExpired:
        raise _timed_out(cmd, timeout) from None
    if result.returncode != 0:
        output = (result.stderr.strip() or result.stdout.strip())[-2000:]
        raise BenchError(f"`{' '.join(map(str, cmd))}` exited {result.returncode}: {output}")
    return result.stdout


def _timed_out(cmd: Sequence[str | Path], timeout: float) -> BenchError:
    return BenchError(f"`{' '.join(map(str, cmd))}` did not finish within {timeout:g}s")


def timed_ms(cmd: Sequence[str | Path], *, timeout: float = COMMAND_TIMEOUT_S) -> float:
    """Wall time of one command as a subprocess, fork/exec included (as vpsnap pays it too)."""
    started = time.perf_counter()
    try:
        result = subprocess.run(
            [str(c) for c in cmd], capture_output=True, check=False, timeout=timeout
        )
    except subprocess.TimeoutExpired:
        raise _timed_out(cmd, timeout) from None
    elapsed = (time.perf_counter() - started) * 1000
    if result.returncode != 0:
        output = result.stderr.decode(errors="replace").strip()
        raise BenchError(f"`{' '.join(map(str, cmd))}` exited {result.returncode}: {output}")
    return elapsed


def progress(message: str) -> None:
    # Progress goes to stderr so stdout carries only the report.
    print(message, file=sys.stderr, flush=True)


def make_image(path: Path, virtual_size: int, data_bytes: int) -> None:
    """A qcow2 image of ``virtual_size`` with ``data_bytes`` of 0xab written from offset 0."""
    run(["qemu-img", "create", "-q", "-f", "qcow2", path, str(virtual_size)])
    out = run(["qemu-io", "-f", "qcow2", "-c", f"write -P 0xab 0 {data_bytes}", path])
    # qemu-io has exited 0 on failed commands in the past; its report line is the proof.
    if f"wrote {data_bytes}/{data_bytes} bytes" not in out:
        raise BenchError(f"qemu-io did not confirm the write to {path}: {out.strip()}")


def check_tools(tools: Sequence[str]) -> None:
    missing = [tool for tool in tools if shutil.which(tool) is None]
    if missing:
        raise BenchError(f"not found on PATH: {', '.join(missing)}")


# -- the server ---------------------------------------------------------------------------------


def vpsnap_command() -> list[str]:
    """The ``vpsnap`` console script of this interpreter's venv, else the module."""
    script = Path(sys.executable).with_name("vpsnap")
    if script.is_file():
        return [str(script)]
    return [sys.executable, "-m", "vpsnap.cli"]


def server_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    # Inherited VPSNAP_* settings (a database URL, say) must not leak into the benchmark's
    # server; the rate limits are raised so that they never throttle the loop.
    env = {k: v for k, v in os.environ.items() if not k.startswith("VPSNAP_")}
    env.update(
        VPSNAP_RATE_LIMIT_PER_KEY="100000/minute",
        VPSNAP_RATE_LIMIT_PER_IP="100000/minute",
        VPSNAP_RATE_LIMIT_SNAPSHOT_MUTATIONS_PER_VPS="100000/minute",
        VPSNAP_LOG_LEVEL="warning",
    )
    env.update(extra or {})
    return env


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def create_account_and_key(data_dir: Path, env: dict[str, str], account: str) -> str:
    """An account and a ``write:all`` key for it through the admin CLI; the key."""
    cli = vpsnap_command()
    run([*cli, "admin", "account", "create", account, "--data-dir", data_dir], env=env)
    return run(
        [
            *cli,
            "admin",
            "key",
            "create",
            "--account",
            account,
            "--scopes",
            "write:all",
            "--data-dir",
            data_dir,
        ],
        env=env,
    ).strip()


def add_vps(
    data_dir: Path,
    env: dict[str, str],
    *,
    account: str,
    name: str,
    disk: Path,
    slots: int,
    extra: Sequence[str] = (),
) -> str:
    """``vpsnap admin vps add`` (``extra``: more of its options); the new VPS's id."""
    out = run(
        [
            *vpsnap_command(),
            "admin",
            "vps",
            "add",
            "--account",
            account,
            "--name",
            name,
            "--disk",
            disk,
            "--slots",
            str(slots),
            *extra,
            "--data-dir",
            data_dir,
        ],
        env=env,
    )
    found = re.search(r"\((vps_[A-Za-z0-9]+)\)", out)
    if found is None:
        raise BenchError(f"could not find the VPS id in `vpsnap admin vps add` output: {out}")
    return found.group(1)


def log_tail(path: Path, lines: int = SERVER_LOG_TAIL_LINES) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no server log)"


@contextmanager
def running_server(data_dir: Path, port: int, env: dict[str, str], log_path: Path) -> Iterator[str]:
    """``vpsnap serve`` for the duration of the block; yields its base URL."""
    with serve_process(data_dir, port, env, log_path) as (base_url, _):
        yield base_url


@contextmanager
def serve_process(
    data_dir: Path, port: int, env: dict[str, str], log_path: Path
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """``running_server`` that also yields the process (for its pid: ``process_cpu_s``)."""
    base_url = f"http://127.0.0.1:{port}"
    cmd = [
        *vpsnap_command(),
        "serve",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--data-dir",
        str(data_dir),
    ]
    # A file, not a pipe: nobody reads the server's stderr while it runs, and a full pipe
    # would block the server.
    with log_path.open("wb") as log:
        process = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_healthy(process, base_url)
        yield base_url, process
    except (BenchError, httpx.HTTPError) as exc:
        # Whatever went wrong with the server, its own log is the first thing to read.
        raise BenchError(f"{exc}\nlast lines of the server log:\n{log_tail(log_path)}") from exc
    finally:
        stop(process)


@dataclass(frozen=True, slots=True)
class ProcessCpu:
    """CPU seconds of a process from ``/proc/PID/stat``: its own (every thread), and that of
    its children it has waited for (``qemu-img``). Clock-tick resolution (10 ms): read the
    difference over many operations, not one."""

    own_s: float
    children_s: float

    def __sub__(self, other: ProcessCpu) -> ProcessCpu:
        return ProcessCpu(self.own_s - other.own_s, self.children_s - other.children_s)


def process_cpu_s(pid: int) -> ProcessCpu:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    # After the command: state is field 3, utime 14, stime 15, cutime 16, cstime 17 (proc(5)).
    utime, stime, cutime, cstime = (int(v) for v in fields[11:15])
    tick = os.sysconf("SC_CLK_TCK")
    return ProcessCpu((utime + stime) / tick, (cutime + cstime) / tick)


BENCH_POSTGRES_URL = os.environ.get(
    "VPSNAP_BENCH_POSTGRES_URL", "postgresql+asyncpg://postgres@127.0.0.1/test"
)


@contextmanager
def private_postgres_database() -> Iterator[str]:
    """A fresh PostgreSQL database on the server of ``VPSNAP_BENCH_POSTGRES_URL`` (default
    the local ``test`` database's) for the block, dropped afterwards; yields its URL."""
    import asyncio  # noqa: PLC0415
    import secrets  # noqa: PLC0415

    import sqlalchemy as sa  # noqa: PLC0415
    from sqlalchemy.ext.asyncio import create_async_engine  # noqa: PLC0415

    async def admin(statement: str) -> None:
        engine = create_async_engine(BENCH_POSTGRES_URL, isolation_level="AUTOCOMMIT")
        try:
            async with engine.connect() as conn:
                await conn.execute(sa.text(statement))
        finally:
            await engine.dispose()

    name = f"vpsnap_bench_{secrets.token_hex(4)}"
    try:
        asyncio.run(admin(f'CREATE DATABASE "{name}"'))
    except Exception as exc:
        raise BenchError(
            f"could not create a PostgreSQL database at {BENCH_POSTGRES_URL}: {exc}"
        ) from exc
    try:
        yield BENCH_POSTGRES_URL.rsplit("/", 1)[0] + f"/{name}"
    finally:
        asyncio.run(admin(f'DROP DATABASE "{name}" WITH (FORCE)'))


def wait_healthy(process: subprocess.Popen[bytes], base_url: str) -> None:
    deadline = time.monotonic() + SERVER_START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise BenchError(f"vpsnap serve exited with {process.returncode} during start-up")
        try:
            if httpx.get(f"{base_url}/healthz", timeout=1.0).status_code == 200:
                return
        except httpx.TransportError:
            pass  # not listening yet
        time.sleep(0.1)
    raise BenchError(f"vpsnap serve did not answer /healthz within {SERVER_START_TIMEOUT_S:g}s")


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is not None:
        return
    process.terminate()  # SIGTERM: uvicorn shuts down gracefully, the worker finishes its job
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@contextmanager
def api_client(base_url: str, key: str) -> Iterator[httpx.Client]:
    """One keep-alive client with the key, for the whole run."""
    with httpx.Client(
        base_url=base_url, headers={"Authorization": f"Bearer {key}"}, timeout=HTTP_TIMEOUT_S
    ) as client:
        yield client


# -- vpsnap API ---------------------------------------------------------------------------------


def parse_timestamp(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def span_ms(start: str, end: str) -> float:
    return (parse_timestamp(end) - parse_timestamp(start)).total_seconds() * 1000


def expect(response: httpx.Response, status: int) -> dict[str, Any]:
    if response.status_code != status:
        raise BenchError(
            f"{response.request.method} {response.request.url.path} answered "
            f"{response.status_code} (expected {status}): {response.text[:1000]}"
        )
    body: dict[str, Any] = response.json()
    return body


def wait_for_job(client: httpx.Client, job_id: str) -> tuple[dict[str, Any], int]:
    """Long-poll the job until it completes; the final job JSON and the number of polls."""
    deadline = time.monotonic() + JOB_TIMEOUT_S
    polls = 0
    while time.monotonic() < deadline:
        job = expect(
            client.get(f"/api/jobs/{job_id}", headers={"Prefer": f"wait={LONG_POLL_S}"}), 200
        )
        polls += 1
        if job["status"] == "completed":
            return job, polls
        if job["status"] == "failed":
            raise BenchError(f"job {job_id} ({job['type']}) failed: {json.dumps(job['error'])}")
    raise BenchError(f"job {job_id} did not complete within {JOB_TIMEOUT_S:g}s")


def run_job(client: httpx.Client, response: httpx.Response) -> tuple[dict[str, Any], int]:
    """A request answered ``202`` with an operation: wait for its job as ``wait_for_job``."""
    accepted = expect(response, 202)
    return wait_for_job(client, accepted["operation"]["jobId"])


@dataclass(frozen=True, slots=True)
class VpsnapSample:
    """One snapshot through the API: the client's view and the job's own timestamps."""

    client_ms: float
    # From the job JSON (server clock, millisecond resolution). createdAt is stamped inside the
    # POST's transaction, startedAt when the worker begins to claim the job, finishedAt when
    # it begins to write the outcome.
    queued_ms: float  # createdAt -> startedAt: the POST's commit, the worker waking up
    running_ms: float  # startedAt -> finishedAt: claim, the handler's hypervisor calls
    polls: int  # GET /api/jobs round trips until "completed" was seen

    @property
    def outside_job_ms(self) -> float:
        """Client time before createdAt (HTTP, auth, rate limit, the POST's reads) and after
        finishedAt (the final transaction, the long-poll's wake-up, re-read and answer)."""
        return self.client_ms - self.queued_ms - self.running_ms


def create_snapshot(client: httpx.Client, vps_id: str, body: Mapping[str, Any]) -> VpsnapSample:
    """Timed: POST the snapshot, long-poll until ``completed``."""
    started = time.perf_counter()
    job, polls = run_job(client, client.post(f"/api/v2/vps/{vps_id}/snapshots", json=body))
    return VpsnapSample(
        client_ms=(time.perf_counter() - started) * 1000,
        queued_ms=span_ms(job["createdAt"], job["startedAt"]),
        running_ms=span_ms(job["startedAt"], job["finishedAt"]),
        polls=polls,
    )


def delete_snapshot(client: httpx.Client, vps_id: str, name: str) -> None:
    """Untimed: free the slot and keep the image's snapshot table from growing."""
    run_job(client, client.delete(f"/api/v2/vps/{vps_id}/snapshots/{name}"))


# -- machine context ----------------------------------------------------------------------------


def machine_context(workdir: Path) -> dict[str, Any]:
    qemu_version = run(["qemu-img", "--version"]).splitlines()[0]
    fs_type = run(["stat", "-f", "-c", "%T", workdir]).strip()
    return {
        "nproc": len(os.sched_getaffinity(0)),
        "qemu_img": qemu_version,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "workdir_filesystem": fs_type,
    }


# -- report -------------------------------------------------------------------------------------


def fmt_ms(value: float) -> str:
    return f"{value:.1f}"


def fmt_ratio(value: float) -> str:
    return f"{value:.2f}x"


def render_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Plain-text table: first column left-aligned, numbers right-aligned."""
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]

    def line(cells: Sequence[str]) -> str:
        first = cells[0].ljust(widths[0])
        rest = (c.rjust(w) for c, w in zip(cells[1:], widths[1:], strict=True))
        return "  ".join([first, *rest])

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(headers), rule, *(line(r) for r in rows)])


@dataclass(frozen=True, slots=True)
class Target:
    description: str
    measured: str
    met: bool

    def as_dict(self) -> dict[str, Any]:
        return {"description": self.description, "measured": self.measured, "met": self.met}


def print_targets(targets: Sequence[Target]) -> None:
    print("targets:")
    for target in targets:
        verdict = "met" if target.met else "MISSED"
        print(f"  [{verdict:>6}] {target.description}: {target.measured}")


def report_json(
    args: argparse.Namespace,
    machine: dict[str, Any],
    config: Mapping[str, Any],
    targets: Sequence[Target],
    **figures: Any,
) -> dict[str, Any]:
    """The JSON report: when, where, with which options, the figures, the targets."""
    return {
        "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine,
        "config": {
            "iterations": args.iterations,
            "warmup": args.warmup,
            **config,
            "data_mib": args.data_mib,
        },
        **figures,
        "targets": [t.as_dict() for t in targets],
    }


def write_json(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2) + "\n")
    print(f"\nresults written to {path}")


# -- entry point --------------------------------------------------------------------------------


def positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def non_negative(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError("must be at least 0")
    return value


@dataclass(frozen=True, slots=True)
class BenchSpec:
    """What differs between the benchmarks' runs (their options: ``add_options``)."""

    name: str  # of the results file, bench/results/NAME.json
    doc: str | None
    tools: tuple[str, ...]
    temp_prefix: str
    work_dir_note: str

    @property
    def results_path(self) -> Path:
        return RESULTS_DIR / f"{self.name}.json"


def parse_args(
    spec: BenchSpec,
    add_options: Callable[[argparse.ArgumentParser], None],
    argv: Sequence[str] | None,
) -> argparse.Namespace:
    """The benchmark's own options (``add_options``, ``--iterations`` first), then the options
    every benchmark has."""
    doc = spec.doc
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0] if doc else None)
    add_options(parser)
    parser.add_argument("--warmup", type=non_negative, default=3, help="discarded first runs")
    parser.add_argument(
        "--data-mib", type=positive, default=64, help="MiB of data written into each image"
    )
    parser.add_argument(
        "--work-dir",
        type=Path,
        default=None,
        help=f"where to create the temp dir (default: the system temp dir); {spec.work_dir_note}",
    )
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (images, log)")
    return parser.parse_args(argv)


@contextmanager
def temp_workdir(prefix: str, parent: Path | None, *, keep: bool) -> Iterator[Path]:
    """A fresh temp dir for the block (an absolute path), removed afterwards unless ``keep``."""
    workdir = Path(tempfile.mkdtemp(prefix=prefix, dir=parent)).resolve()
    try:
        yield workdir
    finally:
        if keep:
            progress(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


def bench_main(
    spec: BenchSpec,
    add_options: Callable[[argparse.ArgumentParser], None],
    body: Callable[[argparse.Namespace, Path], dict[str, Any]],
    argv: Sequence[str] | None = None,
) -> int:
    """Parse the options, check the tools, run ``body`` in a fresh temp dir and write the report
    it returns as JSON. Exit status: 0 when the benchmark ran, 1 when it could not, 130 on
    Ctrl-C."""
    args = parse_args(spec, add_options, argv)
    try:
        check_tools(spec.tools)
        with temp_workdir(spec.temp_prefix, args.work_dir, keep=args.keep) as workdir:
            write_json(spec.results_path, body(args, workdir))
    except BenchError as exc:
        print(f"benchmark could not run: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


def bare_app(bodies: Mapping[str, Any]) -> Any:
    """A bare FastAPI app answering ``GET path`` with ``bodies[path]`` (no authentication,
    middleware, store or response model): the baseline of scale.py's reads, in-process and
    over HTTP (bare_http.py)."""
    from fastapi import FastAPI  # noqa: PLC0415 - only the benchmarks that compare need it

    app = FastAPI()
    for path, body in bodies.items():

        async def endpoint(body: Any = body) -> Any:
            return body

        app.add_api_route(path, endpoint, methods=["GET"])
    return app
