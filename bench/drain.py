"""Draining queued creates: one ``vpsnap serve`` against bash loops of ``qemu-img snapshot -c``.

Run from the repository root::

    .venv/bin/python bench/drain.py [--creates N | --quick] [--concurrency 1 4 8]
                                    [--database sqlite|postgres] [--vpses V]

For each worker concurrency (``VPSNAP_WORKER_CONCURRENCY``): a fresh ``vpsnap serve`` (SQLite
in its data dir, or a PostgreSQL database of the run's own) with V stopped VPSes on real qcow2
disks in two accounts (one account may only fill ``concurrency - 1`` slots of a lane: the
fairness rule, docs/how-snapshots-work.md), N snapshot creates POSTed round robin over the
VPSes from 8 client threads as fast as the server takes them, then waited for. The drain is the
first job's ``createdAt`` to the last one's ``finishedAt`` (the server's own timestamps); the
baseline, in the same run right after, is the same number of ``qemu-img snapshot -c`` on
byte-identical copies of the disks from bash: one loop for concurrency 1, ``c`` loops in
parallel (each over its own share of the disks) for concurrency ``c``. Also printed: job
latency created→finished (mostly the wait in the queue: it grows with the queue, whatever the
server does) and started→finished (the job's own run: what concurrency should leave flat),
p50/p99, and the server's CPU per create (its own, and its ``qemu-img`` children's).

Target (issue 15): drain <= 1.2 x the bash loop at every concurrency, job run time p99 flat.
Exit status: 0 when the benchmark ran (targets may be MISSED), 1 when it could not.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from common import (
    MIB,
    BenchError,
    BenchSpec,
    ProcessCpu,
    Target,
    add_vps,
    api_client,
    bench_main,
    create_account_and_key,
    expect,
    fmt_ms,
    fmt_ratio,
    free_port,
    machine_context,
    make_image,
    parse_timestamp,
    percentile,
    positive,
    print_targets,
    private_postgres_database,
    process_cpu_s,
    progress,
    render_table,
    report_json,
    run,
    serve_process,
    server_env,
    wait_for_job,
)

MAX_RATIO = 1.2
VIRTUAL_SIZE = 20 * 1024**3
ACCOUNTS = ("drain-a", "drain-b")
POST_THREADS = 8
DRAIN_TIMEOUT_S = 900.0


@dataclass(frozen=True, slots=True)
class Spread:
    """p50 / p99 / max of a list of milliseconds."""

    p50: float
    p99: float
    max: float

    @classmethod
    def of(cls, values: list[float]) -> Spread:
        return cls(percentile(values, 50), percentile(values, 99), max(values))

    def as_dict(self) -> dict[str, float]:
        return {"p50_ms": round(self.p50, 3), "p99_ms": round(self.p99, 3), "max_ms": self.max}


@dataclass(frozen=True, slots=True)
class Level:
    """One concurrency's figures."""

    concurrency: int
    creates: int
    drain_s: float
    post_s: float  # first POST sent to the last one answered
    bare_s: float
    total: Spread  # created -> finished, ms
    running: Spread  # started -> finished, ms
    cpu: ProcessCpu  # the server's, first POST to the last job's end

    @property
    def ratio(self) -> float:
        return self.drain_s / self.bare_s

    def as_dict(self) -> dict[str, Any]:
        return {
            "concurrency": self.concurrency,
            "creates": self.creates,
            "drain_s": round(self.drain_s, 3),
            "post_s": round(self.post_s, 3),
            "bare_s": round(self.bare_s, 3),
            "ratio": round(self.ratio, 3),
            "job_created_to_finished_ms": self.total.as_dict(),
            "job_started_to_finished_ms": self.running.as_dict(),
            "server_cpu_per_create_ms": round(1000 * self.cpu.own_s / self.creates, 3),
            "qemu_img_cpu_per_create_ms": round(1000 * self.cpu.children_s / self.creates, 3),
        }


def copy_disk(template: Path, target: Path) -> None:
    run(["cp", "--sparse=always", template, target])


def post_creates(base_url: str, work: list[tuple[str, str, str]]) -> list[str]:
    """POST every (key, vps, name) from ``POST_THREADS`` threads; the job ids, in ``work``'s
    order."""

    def post(batch: list[tuple[str, str, str]]) -> list[str]:
        ids = []
        with httpx.Client(base_url=base_url, timeout=60) as client:
            for key, vps_id, name in batch:
                answer = client.post(
                    f"/api/v2/vps/{vps_id}/snapshots",
                    json={"name": name},
                    headers={"Authorization": f"Bearer {key}"},
                )
                ids.append(expect(answer, 202)["operation"]["jobId"])
        return ids

    with concurrent.futures.ThreadPoolExecutor(POST_THREADS) as pool:
        futures = [pool.submit(post, work[t::POST_THREADS]) for t in range(POST_THREADS)]
        ids = [""] * len(work)
        for t, future in enumerate(futures):
            ids[t::POST_THREADS] = future.result()
        return ids


def bare_loops(disks: list[Path], creates: int, loops: int) -> float:
    """``creates`` snapshots round robin over ``disks`` by ``loops`` bash loops in parallel
    (loop k takes the disks k, k + loops, ...); seconds until the last loop ended."""
    scripts = []
    for k in range(loops):
        mine = [(i, disks[i % len(disks)]) for i in range(creates) if (i % len(disks)) % loops == k]
        lines = [f"qemu-img snapshot -c bare-{i} {disk}" for i, disk in mine]
        # One bash per loop, commands in a file: the loop itself is bash's, as in the issue.
        script = disks[0].parent / f"bare-loop-{k}.sh"
        script.write_text("set -e\n" + "\n".join(lines) + "\n")
        scripts.append(script)
    started = time.monotonic()
    procs = [subprocess.Popen(["bash", str(s)]) for s in scripts]
    codes = [p.wait() for p in procs]
    elapsed = time.monotonic() - started
    if any(codes):
        raise BenchError(f"a bare qemu-img loop failed: exit codes {codes}")
    return elapsed


def one_level(args: argparse.Namespace, workdir: Path, template: Path, concurrency: int) -> Level:
    level_dir = workdir / f"c{concurrency}"
    level_dir.mkdir()
    served = [level_dir / f"vps-{j:03d}.qcow2" for j in range(args.vpses)]
    bare_dir = level_dir / "bare"
    bare_dir.mkdir()
    bare = [bare_dir / f"vps-{j:03d}.qcow2" for j in range(args.vpses)]
    for disk in (*served, *bare):
        copy_disk(template, disk)
    per_vps = -(-args.creates // args.vpses)

    with contextlib.ExitStack() as stack:
        extra = {
            "VPSNAP_WORKER_CONCURRENCY": str(concurrency),
            # Every create of a VPS is queued at once; the default (20) would answer 429.
            "VPSNAP_MAX_JOBS_PER_VPS": str(per_vps + 1),
            "VPSNAP_LOG_LEVEL": args.server_log_level,
        }
        if args.database == "postgres":
            extra["VPSNAP_DATABASE_URL"] = stack.enter_context(private_postgres_database())
        env = server_env(extra)
        data_dir = level_dir / "vpsnap-data"
        keys = {a: create_account_and_key(data_dir, env, a) for a in ACCOUNTS}
        owners = [ACCOUNTS[j % len(ACCOUNTS)] for j in range(args.vpses)]
        vps_ids = [
            add_vps(data_dir, env, account=owner, name=f"drain-{j}", disk=disk, slots=per_vps + 1)
            for j, (owner, disk) in enumerate(zip(owners, served, strict=True))
        ]
        base_url, server = stack.enter_context(
            serve_process(data_dir, free_port(), env, level_dir / "server.log")
        )
        time.sleep(args.settle)  # the start-up's own passes (reconcile, power states)
        work = [
            (keys[owners[i % args.vpses]], vps_ids[i % args.vpses], f"d{i:05d}")
            for i in range(args.creates)
        ]
        progress(f"concurrency {concurrency}: {args.creates} creates over {args.vpses} VPSes ...")
        cpu_before = process_cpu_s(server.pid)
        posted = time.monotonic()
        job_ids = post_creates(base_url, work)
        post_s = time.monotonic() - posted
        # Per VPS the jobs run in order: once each VPS's last job has ended, all have.
        last_of_vps = {work[i][1]: (work[i][0], job_ids[i]) for i in range(len(work))}
        deadline = time.monotonic() + DRAIN_TIMEOUT_S
        for key, job_id in last_of_vps.values():
            with api_client(base_url, key) as client:
                while time.monotonic() < deadline:
                    with contextlib.suppress(httpx.TimeoutException):
                        wait_for_job(client, job_id)
                        break
                else:
                    raise BenchError(f"the drain did not end within {DRAIN_TIMEOUT_S:g} s")
        cpu = process_cpu_s(server.pid) - cpu_before
        jobs = fetch_jobs(base_url, [(work[i][0], job_ids[i]) for i in range(len(work))])

    failed = [j for j in jobs if j["status"] != "completed"]
    if failed:
        raise BenchError(f"{len(failed)} creates did not complete, e.g. {failed[0]}")
    created = [parse_timestamp(j["createdAt"]) for j in jobs]
    started = [parse_timestamp(j["startedAt"]) for j in jobs]
    finished = [parse_timestamp(j["finishedAt"]) for j in jobs]
    drain_s = (max(finished) - min(created)).total_seconds()
    total = Spread.of(
        [(f - c).total_seconds() * 1000 for c, f in zip(created, finished, strict=True)]
    )
    running = Spread.of(
        [(f - s).total_seconds() * 1000 for s, f in zip(started, finished, strict=True)]
    )

    progress(f"concurrency {concurrency}: bare qemu-img, {concurrency} bash loop(s) ...")
    bare_s = bare_loops(bare, args.creates, concurrency)
    if not args.keep:
        shutil.rmtree(level_dir, ignore_errors=True)
    else:
        timeline = sorted(zip(created, started, finished, strict=True), key=lambda t: t[1])
        origin = min(created)
        (level_dir / "jobs.tsv").write_text(
            "".join(
                "\t".join(f"{(t - origin).total_seconds() * 1000:.1f}" for t in row) + "\n"
                for row in timeline
            )
        )
    return Level(concurrency, args.creates, drain_s, post_s, bare_s, total, running, cpu)


def fetch_jobs(base_url: str, keyed: list[tuple[str, str]]) -> list[dict[str, Any]]:
    def get(batch: list[tuple[str, str]]) -> list[dict[str, Any]]:
        with httpx.Client(base_url=base_url, timeout=60) as client:
            return [
                expect(
                    client.get(f"/api/jobs/{job_id}", headers={"Authorization": f"Bearer {key}"}),
                    200,
                )
                for key, job_id in batch
            ]

    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        return [j for part in pool.map(get, [keyed[t::4] for t in range(4)]) for j in part]


def report(
    args: argparse.Namespace, machine: dict[str, Any], levels: list[Level]
) -> dict[str, Any]:
    headers = [
        "concurrency",
        "drain s",
        "bare loops s",
        "vpsnap/bare",
        "POSTs s",
        "job p50",
        "job p99",
        "run p50",
        "run p99",
        "server CPU/create",
        "qemu-img CPU/create",
    ]
    rows = [
        [
            str(lv.concurrency),
            f"{lv.drain_s:.2f}",
            f"{lv.bare_s:.2f}",
            fmt_ratio(lv.ratio),
            f"{lv.post_s:.2f}",
            fmt_ms(lv.total.p50),
            fmt_ms(lv.total.p99),
            fmt_ms(lv.running.p50),
            fmt_ms(lv.running.p99),
            fmt_ms(1000 * lv.cpu.own_s / lv.creates),
            fmt_ms(1000 * lv.cpu.children_s / lv.creates),
        ]
        for lv in levels
    ]
    print(
        f"machine: {machine['nproc']} CPUs, {machine['qemu_img']}, kernel {machine['kernel']}, "
        f"work dir on {machine['workdir_filesystem']}"
    )
    print(
        f"run: {args.creates} creates over {args.vpses} VPSes, {args.data_mib} MiB in each disk, "
        f"database {args.database}; job = created→finished, run = started→finished (ms)"
    )
    print()
    print(render_table(headers, rows))
    print()
    targets = [
        Target(
            f"concurrency {lv.concurrency}: drain <= {MAX_RATIO:g}x the bash loop(s)",
            fmt_ratio(lv.ratio),
            lv.ratio <= MAX_RATIO,
        )
        for lv in levels
    ]
    print_targets(targets)
    return report_json(
        args,
        machine,
        {"creates": args.creates, "vpses": args.vpses, "database": args.database},
        targets,
        levels=[lv.as_dict() for lv in levels],
    )


def add_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--creates", type=positive, default=1000, help="creates per concurrency")
    parser.add_argument("--quick", action="store_true", help="200 creates (overrides --creates)")
    parser.add_argument(
        "--concurrency", type=positive, nargs="+", default=[1, 4, 8], help="worker concurrencies"
    )
    parser.add_argument("--vpses", type=positive, default=16, help="VPSes (and disks)")
    parser.add_argument(
        "--settle", type=float, default=3.0, help="seconds between serve's start and the POSTs"
    )
    parser.add_argument(
        "--server-log-level",
        default="warning",
        help="the server's VPSNAP_LOG_LEVEL (its log is server.log of each level's dir, --keep)",
    )
    parser.add_argument(
        "--database",
        choices=("sqlite", "postgres"),
        default="sqlite",
        help="SQLite in the data dir, or a PostgreSQL database of the run's own at "
        "VPSNAP_BENCH_POSTGRES_URL's server (created and dropped)",
    )


def run_benchmark(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    if args.quick:
        args.creates = 200
    args.iterations = args.creates  # what report_json records as the run's size
    machine = machine_context(workdir)
    template = workdir / "template.qcow2"
    progress(f"creating the template disk with {args.data_mib} MiB of data ...")
    make_image(template, VIRTUAL_SIZE, args.data_mib * MIB)
    levels = [one_level(args, workdir, template, c) for c in args.concurrency]
    return report(args, machine, levels)


if __name__ == "__main__":
    tools = ("qemu-img", "qemu-io", "cp", "bash")
    spec = BenchSpec(
        "drain", __doc__, tools, "vpsnap-drain-", "its filesystem decides qemu-img's cost"
    )
    sys.exit(bench_main(spec, add_options, run_benchmark))
