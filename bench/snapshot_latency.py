"""Snapshot latency: vpsnap end-to-end vs. bare ``qemu-img snapshot -c`` vs. a full ``cp``.

Run from the repository root::

    .venv/bin/python bench/snapshot_latency.py [--iterations N] [--keep]

For a small (2 GiB) and a huge (1 TiB) virtual disk holding the same amount of data, it
measures how long a client waits for a snapshot through the vpsnap HTTP API (POST, then
long-poll the job until ``completed``), how long ``qemu-img snapshot -c`` alone takes on an
identical image, and how long a naive full copy of the image file takes. It prints a table,
checks the latency targets and writes the figures to ``bench/results/snapshot_latency.json``.

Exit status: 0 when the benchmark ran (targets may still be MISSED; the output says so), 1
when it could not run (missing tools, server failed to start, a job failed, ...).
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
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Sequence

MIB = 1024**2
GIB = 1024**3
TIB = 1024**4

# The two virtual sizes compared; qcow2 metadata (L1 table, refcount table) grows with the
# virtual size, which is what the 1 TiB / 2 GiB ratio is meant to expose.
SIZES: tuple[tuple[str, int], ...] = (("2 GiB", 2 * GIB), ("1 TiB", TIB))

# Targets from the product brief.
MAX_OVERHEAD_MS = 30.0
MAX_SIZE_RATIO = 1.2

ACCOUNT = "bench"
SLOTS = 100
RESULTS_PATH = Path(__file__).resolve().parent / "results" / "snapshot_latency.json"

SERVER_START_TIMEOUT_S = 30.0
JOB_TIMEOUT_S = 120.0
LONG_POLL_S = 30
HTTP_TIMEOUT_S = LONG_POLL_S + 10.0
SERVER_LOG_TAIL_LINES = 40


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


# -- samples --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class VpsnapSample:
    """One snapshot through the API: the client's view and the job's own timestamps."""

    client_ms: float
    # From the job JSON (server clock, millisecond resolution). createdAt is stamped inside the
    # POST's transaction, startedAt when the worker begins to claim the job, finishedAt when
    # it begins to write the outcome.
    queued_ms: float  # createdAt -> startedAt: the POST's commit, the worker waking up
    running_ms: float  # startedAt -> finishedAt: claim, the handler's qemu-img calls
    polls: int  # GET /api/jobs round trips until "completed" was seen

    @property
    def outside_job_ms(self) -> float:
        """Client time before createdAt (HTTP, auth, rate limit, the POST's reads) and after
        finishedAt (the final transaction, the long-poll's wake-up, re-read and answer)."""
        return self.client_ms - self.queued_ms - self.running_ms


@dataclass(slots=True)
class SizeResult:
    label: str
    virtual_size: int
    vpsnap: list[VpsnapSample] = field(default_factory=list)
    qemu_img_ms: list[float] = field(default_factory=list)
    qemu_img_info_ms: list[float] = field(default_factory=list)
    cp_ms: list[float] = field(default_factory=list)

    @property
    def vpsnap_ms(self) -> list[float]:
        return [s.client_ms for s in self.vpsnap]


# -- subprocess helpers -------------------------------------------------------------------------


def run(cmd: Sequence[str | Path], *, env: dict[str, str] | None = None) -> str:
    """Run a command to completion; its stdout, or BenchError with its output on failure."""
    result = subprocess.run(
        [str(c) for c in cmd], capture_output=True, text=True, env=env, check=False
    )
    if result.returncode != 0:
        output = (result.stderr.strip() or result.stdout.strip())[-2000:]
        raise BenchError(f"`{' '.join(map(str, cmd))}` exited {result.returncode}: {output}")
    return result.stdout


def timed_ms(cmd: Sequence[str | Path]) -> float:
    """Wall time of one command as a subprocess, fork/exec included (as vpsnap pays it too)."""
    started = time.perf_counter()
    result = subprocess.run([str(c) for c in cmd], capture_output=True, check=False)
    elapsed = (time.perf_counter() - started) * 1000
    if result.returncode != 0:
        output = result.stderr.decode(errors="replace").strip()
        raise BenchError(f"`{' '.join(map(str, cmd))}` exited {result.returncode}: {output}")
    return elapsed


def progress(message: str) -> None:
    # Progress goes to stderr so stdout carries only the report.
    print(message, file=sys.stderr, flush=True)


# -- images -------------------------------------------------------------------------------------


def make_image(path: Path, virtual_size: int, data_bytes: int) -> None:
    """A qcow2 image of ``virtual_size`` with ``data_bytes`` of 0xab written from offset 0."""
    run(["qemu-img", "create", "-q", "-f", "qcow2", path, str(virtual_size)])
    out = run(["qemu-io", "-f", "qcow2", "-c", f"write -P 0xab 0 {data_bytes}", path])
    # qemu-io has exited 0 on failed commands in the past; its report line is the proof.
    if f"wrote {data_bytes}/{data_bytes} bytes" not in out:
        raise BenchError(f"qemu-io did not confirm the write to {path}: {out.strip()}")


# -- the server ---------------------------------------------------------------------------------


def vpsnap_command() -> list[str]:
    """The ``vpsnap`` console script of this interpreter's venv, else the module."""
    script = Path(sys.executable).with_name("vpsnap")
    if script.is_file():
        return [str(script)]
    return [sys.executable, "-m", "vpsnap.cli.main"]


def server_env() -> dict[str, str]:
    # Inherited VPSNAP_* settings (a database URL, say) must not leak into the benchmark's
    # server; the rate limits are raised so that they never throttle the loop.
    env = {k: v for k, v in os.environ.items() if not k.startswith("VPSNAP_")}
    env.update(
        VPSNAP_RATE_LIMIT_PER_KEY="100000/minute",
        VPSNAP_RATE_LIMIT_SNAPSHOT_MUTATIONS_PER_VPS="100000/minute",
        VPSNAP_LOG_LEVEL="warning",
    )
    return env


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def register(
    data_dir: Path, disks: dict[str, Path], env: dict[str, str]
) -> tuple[str, dict[str, str]]:
    """Account, key and one VPS per disk through the admin CLI; the key and VPS ids by label."""
    cli = vpsnap_command()
    run([*cli, "admin", "account", "create", ACCOUNT, "--data-dir", data_dir], env=env)
    key = run(
        [
            *cli,
            "admin",
            "key",
            "create",
            "--account",
            ACCOUNT,
            "--scopes",
            "write:all",
            "--data-dir",
            data_dir,
        ],
        env=env,
    ).strip()
    vps_ids: dict[str, str] = {}
    for label, disk in disks.items():
        out = run(
            [
                *cli,
                "admin",
                "vps",
                "add",
                "--account",
                ACCOUNT,
                "--name",
                vps_name(label),
                "--disk",
                disk,
                "--slots",
                str(SLOTS),
                "--data-dir",
                data_dir,
            ],
            env=env,
        )
        found = re.search(r"\((vps_[A-Za-z0-9]+)\)", out)
        if found is None:
            raise BenchError(f"could not find the VPS id in `vpsnap admin vps add` output: {out}")
        vps_ids[label] = found.group(1)
    return key, vps_ids


def vps_name(label: str) -> str:
    return "bench-" + label.replace(" ", "").lower()


def log_tail(path: Path, lines: int = SERVER_LOG_TAIL_LINES) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no server log)"


@contextmanager
def running_server(data_dir: Path, port: int, env: dict[str, str], log_path: Path) -> Iterator[str]:
    """``vpsnap serve`` for the duration of the block; yields its base URL."""
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
        yield base_url
    except (BenchError, httpx.HTTPError) as exc:
        # Whatever went wrong with the server, its own log is the first thing to read.
        raise BenchError(f"{exc}\nlast lines of the server log:\n{log_tail(log_path)}") from exc
    finally:
        stop(process)


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


def vpsnap_create(client: httpx.Client, vps_id: str, name: str) -> VpsnapSample:
    """Timed: POST the snapshot, long-poll until ``completed``."""
    started = time.perf_counter()
    accepted = expect(client.post(f"/api/v2/vps/{vps_id}/snapshots", json={"name": name}), 202)
    job, polls = wait_for_job(client, accepted["operation"]["jobId"])
    client_ms = (time.perf_counter() - started) * 1000
    return VpsnapSample(
        client_ms=client_ms,
        queued_ms=span_ms(job["createdAt"], job["startedAt"]),
        running_ms=span_ms(job["startedAt"], job["finishedAt"]),
        polls=polls,
    )


def vpsnap_delete(client: httpx.Client, vps_id: str, name: str) -> None:
    """Untimed: free the slot and keep the image's snapshot table from growing."""
    accepted = expect(client.delete(f"/api/v2/vps/{vps_id}/snapshots/{name}"), 202)
    wait_for_job(client, accepted["operation"]["jobId"])


# -- measurements -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Plan:
    iterations: int
    warmup: int
    cp_iterations: int


@dataclass(frozen=True, slots=True)
class Subject:
    """One virtual size under test: the server's VPS and the bare-qemu-img twin of its disk."""

    result: SizeResult
    vps_id: str
    bare_image: Path


def measure_round(client: httpx.Client, subject: Subject, name: str, *, keep: bool) -> None:
    """One vpsnap snapshot and one bare qemu-img snapshot, each removed again untimed."""
    sample = vpsnap_create(client, subject.vps_id, name)
    vpsnap_delete(client, subject.vps_id, name)

    bare_ms = timed_ms(["qemu-img", "snapshot", "-c", name, subject.bare_image])
    run(["qemu-img", "snapshot", "-d", name, subject.bare_image])
    # Reference for the breakdown: the create job inspects each disk with this before -c.
    info_ms = timed_ms(["qemu-img", "info", "--output=json", "-U", subject.bare_image])

    if keep:
        subject.result.vpsnap.append(sample)
        subject.result.qemu_img_ms.append(bare_ms)
        subject.result.qemu_img_info_ms.append(info_ms)


def measure_snapshots(plan: Plan, client: httpx.Client, subjects: Sequence[Subject]) -> None:
    # Sizes and methods are interleaved round by round, so that drift (a warming cache, a
    # noisy neighbour) hits every figure alike instead of whichever was measured last.
    for i in range(plan.warmup + plan.iterations):
        for subject in subjects:
            measure_round(client, subject, f"bench-{i:04d}", keep=i >= plan.warmup)


def measure_copies(plan: Plan, result: SizeResult, image: Path, scratch: Path) -> None:
    """A plain ``cp`` of the image file: what a naive "copy the disk" backup costs."""
    target = scratch / f"copy-of-{image.name}"
    for i in range(1 + plan.cp_iterations):  # one warm-up copy
        elapsed = timed_ms(["cp", image, target])
        target.unlink()
        if i > 0:
            result.cp_ms.append(elapsed)


def prepare_images(workdir: Path, data_mib: int) -> tuple[dict[str, Path], dict[str, Path]]:
    """Per size: the image the server snapshots, and a byte-identical one for bare qemu-img."""
    served: dict[str, Path] = {}
    bare: dict[str, Path] = {}
    for label, size in SIZES:
        slug = vps_name(label)
        progress(f"creating the {label} image with {data_mib} MiB of data ...")
        served[label] = workdir / f"{slug}-served.qcow2"
        make_image(served[label], size, data_mib * MIB)
        # A separate copy, so bare qemu-img never touches the image the server works on.
        bare[label] = workdir / f"{slug}-bare.qcow2"
        shutil.copyfile(served[label], bare[label])
    return served, bare


def benchmark(args: argparse.Namespace, workdir: Path) -> list[SizeResult]:
    plan = Plan(args.iterations, args.warmup, args.cp_iterations)
    served, bare = prepare_images(workdir, args.data_mib)

    env = server_env()
    data_dir = workdir / "vpsnap-data"
    progress("registering account, key and VPSes with the admin CLI ...")
    key, vps_ids = register(data_dir, served, env)
    subjects = [
        Subject(SizeResult(label, size), vps_ids[label], bare[label]) for label, size in SIZES
    ]

    progress("starting vpsnap serve ...")
    with (
        running_server(data_dir, free_port(), env, workdir / "server.log") as base_url,
        httpx.Client(
            base_url=base_url,
            headers={"Authorization": f"Bearer {key}"},
            timeout=HTTP_TIMEOUT_S,
        ) as client,
    ):
        progress(f"snapshots: {plan.warmup} warm-up + {plan.iterations} rounds per size ...")
        measure_snapshots(plan, client, subjects)

    for subject in subjects:
        progress(f"copying the {subject.result.label} image {plan.cp_iterations} times ...")
        measure_copies(plan, subject.result, subject.bare_image, workdir)
    return [subject.result for subject in subjects]


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
class Figures:
    """The summary of one size, as printed and as stored."""

    label: str
    vpsnap: Summary
    qemu_img: Summary
    cp: Summary
    queued: Summary
    running: Summary
    outside_job: Summary
    polls_median: float
    qemu_img_info: Summary

    @classmethod
    def of(cls, result: SizeResult) -> Figures:
        return cls(
            label=result.label,
            vpsnap=Summary.of(result.vpsnap_ms),
            qemu_img=Summary.of(result.qemu_img_ms),
            cp=Summary.of(result.cp_ms),
            queued=Summary.of([s.queued_ms for s in result.vpsnap]),
            running=Summary.of([s.running_ms for s in result.vpsnap]),
            outside_job=Summary.of([s.outside_job_ms for s in result.vpsnap]),
            polls_median=statistics.median(s.polls for s in result.vpsnap),
            qemu_img_info=Summary.of(result.qemu_img_info_ms),
        )

    @property
    def overhead_ms(self) -> float:
        return self.vpsnap.median - self.qemu_img.median

    @property
    def vpsnap_over_qemu(self) -> float:
        return self.vpsnap.median / self.qemu_img.median

    @property
    def cp_over_vpsnap(self) -> float:
        return self.cp.median / self.vpsnap.median


def main_table(figures: Sequence[Figures]) -> str:
    headers = [
        "virtual size",
        "vpsnap med",
        "vpsnap p90",
        "qemu-img med",
        "qemu-img p90",
        "cp med",
        "cp p90",
        "overhead",
        "vpsnap/qemu-img",
        "cp/vpsnap",
    ]
    rows = [
        [
            f.label,
            fmt_ms(f.vpsnap.median),
            fmt_ms(f.vpsnap.p90),
            fmt_ms(f.qemu_img.median),
            fmt_ms(f.qemu_img.p90),
            fmt_ms(f.cp.median),
            fmt_ms(f.cp.p90),
            f"{f.overhead_ms:+.1f}",
            fmt_ratio(f.vpsnap_over_qemu),
            fmt_ratio(f.cp_over_vpsnap),
        ]
        for f in figures
    ]
    return render_table(headers, rows)


def breakdown_table(figures: Sequence[Figures]) -> str:
    headers = [
        "virtual size",
        "client total",
        "job queued",
        "job running",
        "outside job",
        "polls",
        "bare info",
        "bare snapshot -c",
    ]
    rows = [
        [
            f.label,
            fmt_ms(f.vpsnap.median),
            fmt_ms(f.queued.median),
            fmt_ms(f.running.median),
            fmt_ms(f.outside_job.median),
            f"{f.polls_median:g}",
            fmt_ms(f.qemu_img_info.median),
            fmt_ms(f.qemu_img.median),
        ]
        for f in figures
    ]
    return render_table(headers, rows)


@dataclass(frozen=True, slots=True)
class Target:
    description: str
    measured: str
    met: bool


def check_targets(small: Figures, large: Figures) -> list[Target]:
    targets = [
        Target(
            f"{f.label}: vpsnap median <= qemu-img median + {MAX_OVERHEAD_MS:g} ms",
            f"{fmt_ms(f.vpsnap.median)} ms vs. {fmt_ms(f.qemu_img.median + MAX_OVERHEAD_MS)} ms "
            f"(overhead {f.overhead_ms:+.1f} ms)",
            f.overhead_ms <= MAX_OVERHEAD_MS,
        )
        for f in (small, large)
    ]
    ratio = large.vpsnap.median / small.vpsnap.median
    targets.append(
        Target(
            f"vpsnap median {large.label} / {small.label} <= {MAX_SIZE_RATIO:g}",
            fmt_ratio(ratio),
            ratio <= MAX_SIZE_RATIO,
        )
    )
    return targets


def report(
    args: argparse.Namespace, machine: dict[str, Any], results: Sequence[SizeResult]
) -> dict[str, Any]:
    """Print the report; return it as a JSON-ready dict."""
    figures = [Figures.of(r) for r in results]
    small, large = figures
    targets = check_targets(small, large)

    print(
        f"machine: {machine['nproc']} CPUs, {machine['qemu_img']}, kernel {machine['kernel']}, "
        f"work dir on {machine['workdir_filesystem']}"
    )
    print(
        f"run: {args.iterations} iterations (+{args.warmup} warm-up) per size, "
        f"{args.cp_iterations} copies, {args.data_mib} MiB written to each image; times in ms"
    )
    print()
    print(main_table(figures))
    print()
    print(f"{large.label} / {small.label} (medians):")
    print(f"  vpsnap end-to-end  {fmt_ratio(large.vpsnap.median / small.vpsnap.median)}")
    print(f"  bare qemu-img      {fmt_ratio(large.qemu_img.median / small.qemu_img.median)}")
    print()
    print("where vpsnap's time goes (medians, ms; job times from the job's own timestamps):")
    print(breakdown_table(figures))
    print()
    print("targets:")
    for target in targets:
        verdict = "met" if target.met else "MISSED"
        print(f"  [{verdict:>6}] {target.description}: {target.measured}")

    return {
        "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine,
        "config": {
            "iterations": args.iterations,
            "warmup": args.warmup,
            "cp_iterations": args.cp_iterations,
            "data_mib": args.data_mib,
        },
        "sizes": [size_json(r, f) for r, f in zip(results, figures, strict=True)],
        "ratios_large_over_small": {
            "vpsnap": large.vpsnap.median / small.vpsnap.median,
            "qemu_img": large.qemu_img.median / small.qemu_img.median,
        },
        "targets": [
            {"description": t.description, "measured": t.measured, "met": t.met} for t in targets
        ],
    }


def size_json(result: SizeResult, f: Figures) -> dict[str, Any]:
    return {
        "label": result.label,
        "virtual_size_bytes": result.virtual_size,
        "vpsnap": f.vpsnap.as_dict(),
        "qemu_img": f.qemu_img.as_dict(),
        "cp": f.cp.as_dict(),
        "overhead_ms": round(f.overhead_ms, 3),
        "vpsnap_over_qemu_img": f.vpsnap_over_qemu,
        "cp_over_vpsnap": f.cp_over_vpsnap,
        "job_breakdown": {
            "queued": f.queued.as_dict(),
            "running": f.running.as_dict(),
            "outside_job": f.outside_job.as_dict(),
            "polls_median": f.polls_median,
            "bare_qemu_img_info": f.qemu_img_info.as_dict(),
        },
        "samples_ms": {
            "vpsnap": [round(v, 3) for v in result.vpsnap_ms],
            "qemu_img": [round(v, 3) for v in result.qemu_img_ms],
            "qemu_img_info": [round(v, 3) for v in result.qemu_img_info_ms],
            "cp": [round(v, 3) for v in result.cp_ms],
        },
        "vpsnap_jobs": [
            {
                "client_ms": round(v.client_ms, 3),
                "queued_ms": v.queued_ms,
                "running_ms": v.running_ms,
                "polls": v.polls,
            }
            for v in result.vpsnap
        ],
    }


def write_json(data: dict[str, Any]) -> None:
    RESULTS_PATH.parent.mkdir(parents=True, exist_ok=True)
    RESULTS_PATH.write_text(json.dumps(data, indent=2) + "\n")
    print(f"\nresults written to {RESULTS_PATH}")


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


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--iterations", type=positive, default=30, help="timed snapshots per size")
    parser.add_argument("--warmup", type=non_negative, default=3, help="discarded first runs")
    parser.add_argument("--cp-iterations", type=positive, default=5, help="timed copies per size")
    parser.add_argument(
        "--data-mib", type=positive, default=64, help="MiB of data written into each image"
    )
    parser.add_argument(
        "--work-dir",
        type=Path,
        default=None,
        help="where to create the temp dir (default: the system temp dir); "
        "its filesystem decides what cp and qemu-img cost",
    )
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (images, log)")
    return parser.parse_args(argv)


def check_tools() -> None:
    missing = [tool for tool in ("qemu-img", "qemu-io", "cp") if shutil.which(tool) is None]
    if missing:
        raise BenchError(f"not found on PATH: {', '.join(missing)}")


def with_workdir(args: argparse.Namespace, body: Callable[[Path], None]) -> None:
    workdir = Path(tempfile.mkdtemp(prefix="vpsnap-bench-", dir=args.work_dir))
    try:
        body(workdir)
    finally:
        if args.keep:
            progress(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)

    def body(workdir: Path) -> None:
        machine = machine_context(workdir)
        results = benchmark(args, workdir)
        write_json(report(args, machine, results))

    try:
        check_tools()
        with_workdir(args, body)
    except BenchError as exc:
        print(f"benchmark could not run: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
