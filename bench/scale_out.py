"""Scale-out: what the separate processes cost and what they buy, on one machine.

1. Cross-process pickup latency (a job's ``createdAt`` → ``startedAt``: POST on one API
   process, claimed by an agent process) and long-poll wake-up (``finishedAt`` → the answer of a
   long-poll waiting on the *other* API process), against the same two figures of the embedded
   ``vpsnap serve`` on SQLite, in the same run.
2. Draining N queued snapshot creates spread over V VPSes with 1, 2 and 4 agent processes (one
   node each: an agent serves exactly one node), against a bare ``qemu-img snapshot -c`` loop
   over the same files. The agents are paused (SIGSTOP) while the creates are queued, so the
   figure is the drain alone.
3. API ``GET /api/v2/vps/{id}`` throughput with two API processes behind nginx, one API process
   behind nginx, and one API process directly, from an asyncio load generator in this process
   (which shares the machine's cores with the servers: read the ratios, not the absolutes).

The cluster is vpsnap/localcluster.py's (docs/cluster.md) with a PostgreSQL of its own
(``fsync=off``, like a test instance: the embedded SQLite keeps its default durability, so
part 1 flatters the cluster slightly on writes) and a redis-server of its own.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import signal
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
from common import (
    BenchError,
    BenchSpec,
    Target,
    add_vps,
    bench_main,
    create_account_and_key,
    fmt_ms,
    fmt_ratio,
    free_port,
    machine_context,
    percentile,
    positive,
    progress,
    render_table,
    report_json,
    running_server,
    server_env,
    timed_ms,
)

from vpsnap.localcluster import ClusterPlan, LocalCluster

LONG_POLL = {"Prefer": "wait=30"}
BENCH_SETTINGS = {
    "VPSNAP_RATE_LIMIT_PER_KEY": "10000000/minute",
    "VPSNAP_RATE_LIMIT_PER_IP": "10000000/minute",
    "VPSNAP_RATE_LIMIT_SNAPSHOT_MUTATIONS_PER_VPS": "10000000/minute",
    "VPSNAP_LOG_LEVEL": "warning",
    "VPSNAP_MAX_JOBS_PER_VPS": "100000",
    # Paused agents must not look offline while the drain's creates are queued.
    "VPSNAP_NODE_OFFLINE_AFTER_SECONDS": "600",
}


def _ts(value: str) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def _headers(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


# -- 1. pickup and wake-up -----------------------------------------------------------------------


def measure_latency(
    post_url: str, poll_url: str, key: str, vps_id: str, rounds: int, warmup: int
) -> tuple[list[float], list[float]]:
    """(pickup ms, wake-up ms) over ``rounds`` creates after ``warmup`` discarded ones. A
    wake-up counts only when its long-poll was already waiting when the job finished."""
    pickups: list[float] = []
    wakeups: list[float] = []
    with (
        httpx.Client(base_url=post_url, headers=_headers(key), timeout=60) as poster,
        httpx.Client(base_url=poll_url, headers=_headers(key), timeout=60) as poller,
    ):
        for index in range(warmup + rounds):
            name = f"lat{index}"
            answer = poster.post(f"/api/v2/vps/{vps_id}/snapshots", json={"name": name})
            if answer.status_code != 202:
                raise BenchError(f"create answered {answer.status_code}: {answer.text}")
            job_id = answer.json()["operation"]["jobId"]
            while True:
                sent = time.time()
                job = poller.get(f"/api/jobs/{job_id}", headers=LONG_POLL).json()
                received = time.time()
                if job["status"] in ("completed", "failed"):
                    break
            if job["status"] != "completed":
                raise BenchError(f"job {job_id} failed: {job.get('error')}")
            if index >= warmup:
                pickups.append((_ts(job["startedAt"]) - _ts(job["createdAt"])) * 1000)
                finished = _ts(job["finishedAt"])
                if sent < finished:
                    wakeups.append((received - finished) * 1000)
            deleted = poster.delete(f"/api/v2/vps/{vps_id}/snapshots/{name}").json()["operation"][
                "jobId"
            ]
            while poller.get(f"/api/jobs/{deleted}", headers=LONG_POLL).json()["status"] not in (
                "completed",
                "failed",
            ):
                pass
    return pickups, wakeups


def embedded_latency(args: argparse.Namespace, workdir: Path) -> tuple[list[float], list[float]]:
    data_dir = workdir / "embedded"
    data_dir.mkdir()
    env = server_env()
    key = create_account_and_key(data_dir, env, "bench")
    disk = data_dir / "lat.qcow2"
    timed_ms(["qemu-img", "create", "-q", "-f", "qcow2", disk, "64M"])
    vps_id = add_vps(data_dir, env, account="bench", name="lat", disk=disk, slots=5)
    with running_server(data_dir, free_port(), env, workdir / "embedded.log") as url:
        return measure_latency(url, url, key, vps_id, args.iterations, args.warmup)


# -- 2. draining queued creates ------------------------------------------------------------------


def queue_creates(cluster: LocalCluster, vps_ids: list[str], creates: int, tag: str) -> None:
    """``creates`` POSTs spread round robin over the VPSes, from 8 threads over both APIs."""

    def post(batch: list[tuple[str, str]], url: str) -> None:
        with httpx.Client(base_url=url, headers=_headers(cluster.keys["full"]), timeout=60) as c:
            for vps_id, name in batch:
                answer = c.post(f"/api/v2/vps/{vps_id}/snapshots", json={"name": name})
                if answer.status_code != 202:
                    raise BenchError(f"create answered {answer.status_code}: {answer.text}")

    work = [(vps_ids[i % len(vps_ids)], f"{tag}-{i}") for i in range(creates)]
    threads = 8
    with concurrent.futures.ThreadPoolExecutor(threads) as pool:
        futures = [
            pool.submit(post, work[t::threads], cluster.api_urls[t % len(cluster.api_urls)])
            for t in range(threads)
        ]
        for future in futures:
            future.result()


def drain(cluster: LocalCluster, agents: int, args: argparse.Namespace) -> dict[str, Any]:
    nodes = [f"hv-{n}" for n in range(1, agents + 1)]
    tag = f"a{agents}"
    placed = [(nodes[j % agents], f"{tag}-vps-{j}") for j in range(args.vpses)]
    per_vps = -(-args.creates // args.vpses)
    vps_ids = cluster.add_vpses(placed, slots=per_vps + 1)
    for node in nodes:
        cluster.agent(node).signal(signal.SIGSTOP)
    try:
        queue_creates(cluster, vps_ids, args.creates, tag)
    finally:
        started = time.monotonic()
        for node in nodes:
            cluster.agent(node).signal(signal.SIGCONT)
    deadline = started + 600
    while True:
        [row] = cluster.query(
            "SELECT count(*) FILTER (WHERE status = 'completed') AS done, "
            "count(*) FILTER (WHERE status = 'failed') AS failed "
            "FROM jobs WHERE vps_id = ANY($1::text[])",
            vps_ids,
        )
        if row["done"] + row["failed"] >= args.creates:
            break
        if time.monotonic() > deadline:
            raise BenchError(f"{agents} agents: {row['done']} of {args.creates} done in 600 s")
        time.sleep(0.05)
    seconds = time.monotonic() - started
    if row["failed"]:
        raise BenchError(f"{agents} agents: {row['failed']} creates failed")
    # The bare loop: the same number of snapshots on the same files, one after another.
    disks = [cluster.disk(node, name) for node, name in placed]
    bare_started = time.monotonic()
    for i in range(args.creates):
        timed_ms(["qemu-img", "snapshot", "-c", f"bare-{i}", disks[i % len(disks)]])
    bare = time.monotonic() - bare_started
    return {"agents": agents, "seconds": seconds, "bare_seconds": bare}


# -- 3. GET throughput ---------------------------------------------------------------------------


async def _hammer(
    url: str, key: str, path: str, seconds: float, concurrency: int
) -> dict[str, Any]:
    done = 0
    errors = 0
    latencies: list[float] = []
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(
        base_url=url, headers=_headers(key), timeout=30, limits=limits
    ) as client:
        deadline = time.monotonic() + seconds

        async def worker() -> None:
            nonlocal done, errors
            while time.monotonic() < deadline:
                started = time.perf_counter()
                answer = await client.get(path)
                latencies.append((time.perf_counter() - started) * 1000)
                if answer.status_code == 200:
                    done += 1
                else:
                    errors += 1

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return {
        "requests_per_s": done / seconds,
        "errors": errors,
        "p50_ms": percentile(latencies, 50),
        "p99_ms": percentile(latencies, 99),
    }


def throughput(cluster: LocalCluster, args: argparse.Namespace) -> list[dict[str, Any]]:
    [row] = cluster.query("SELECT id FROM vps WHERE name = 'web-1'")
    path = f"/api/v2/vps/{row['id']}"
    key = cluster.keys["full"]
    rows = []

    def measure(label: str, url: str) -> None:
        asyncio.run(_hammer(url, key, path, 1.0, args.concurrency))  # warm-up
        figures = asyncio.run(_hammer(url, key, path, args.get_seconds, args.concurrency))
        rows.append({"setup": label, **figures})
        progress(f"  {label}: {figures['requests_per_s']:.0f} req/s")

    measure("nginx → 2 APIs", cluster.url)
    cluster.members["api-2"].stop()
    # nginx finds api-2 refusing and leaves it out (it tries it again every 2 s).
    measure("nginx → 1 API", cluster.url)
    measure("1 API, direct", cluster.api_urls[0])
    return rows


# -- the run -------------------------------------------------------------------------------------


def run_benchmark(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    agent_counts = sorted({int(n) for n in args.agents.split(",")})
    progress("embedded: pickup and wake-up …")
    emb_pickup, emb_wake = embedded_latency(args, workdir)
    progress("starting the cluster …")
    plan = ClusterPlan(
        root=workdir / "cluster",
        nodes=tuple(f"hv-{n}" for n in range(1, max(agent_counts) + 1)),
        apis=2,
        schedulers=1,
        port=0,
        own_postgres=True,
        own_redis=True,
        vpses=("web",),
        disk_mib=64,
        data_mib=1,
        settings=BENCH_SETTINGS,
    )
    cluster = LocalCluster(plan)
    cluster.start()
    try:
        progress("cluster: pickup and wake-up …")
        [row] = cluster.query("SELECT id FROM vps WHERE name = 'web-1'")
        api_1, api_2 = cluster.api_urls
        cl_pickup, cl_wake = measure_latency(
            api_1, api_2, cluster.keys["full"], row["id"], args.iterations, args.warmup
        )
        drains = []
        for agents in agent_counts:
            progress(f"draining {args.creates} creates over {args.vpses} VPSes, {agents} agents …")
            drains.append(drain(cluster, agents, args))
        progress("GET throughput …")
        gets = throughput(cluster, args)
    finally:
        cluster.stop()

    lat_rows = []
    figures: dict[str, Any] = {}
    for label, emb, cl in (
        ("pickup (createdAt → startedAt)", emb_pickup, cl_pickup),
        ("long-poll wake-up (finishedAt → answer)", emb_wake, cl_wake),
    ):
        e50, e99, c50, c99 = (
            percentile(emb, 50),
            percentile(emb, 99),
            percentile(cl, 50),
            percentile(cl, 99),
        )
        lat_rows.append(
            [label, fmt_ms(e50), fmt_ms(e99), fmt_ms(c50), fmt_ms(c99), fmt_ratio(c99 / e99),
             f"{len(emb)}/{len(cl)}"]
        )  # fmt: skip
        figures[label] = {"embedded": [e50, e99], "cluster": [c50, c99]}
    print("\n1. cross-process wake-ups: embedded `vpsnap serve` (SQLite) vs the cluster (ms)")
    print(
        render_table(
            ["", "embedded p50", "embedded p99", "cluster p50", "cluster p99", "p99 ratio", "n"],
            lat_rows,
        )
    )
    base = drains[0]["seconds"]
    print(
        f"\n2. draining {args.creates} queued creates over {args.vpses} VPSes (one node per agent)"
    )
    print(
        render_table(
            ["agents", "drain s", "creates/s", "vs 1 agent", "bare qemu-img loop s", "vpsnap/bare"],
            [
                [
                    str(d["agents"]),
                    f"{d['seconds']:.2f}",
                    f"{args.creates / d['seconds']:.0f}",
                    fmt_ratio(base / d["seconds"]),
                    f"{d['bare_seconds']:.2f}",
                    fmt_ratio(d["seconds"] / d["bare_seconds"]),
                ]
                for d in drains
            ],
        )
    )
    one_direct = next(g for g in gets if g["setup"] == "1 API, direct")["requests_per_s"]
    print(
        f"\n3. GET /api/v2/vps/{{id}} for {args.get_seconds:g} s, {args.concurrency} concurrent "
        "(load generator on the same cores)"
    )
    print(
        render_table(
            ["setup", "req/s", "vs 1 API direct", "p50 ms", "p99 ms", "errors"],
            [
                [
                    g["setup"],
                    f"{g['requests_per_s']:.0f}",
                    fmt_ratio(g["requests_per_s"] / one_direct),
                    fmt_ms(g["p50_ms"]),
                    fmt_ms(g["p99_ms"]),
                    str(g["errors"]),
                ]
                for g in gets
            ],
        )
    )
    targets = [
        Target(
            "cross-process pickup p99 ≤ 50 ms",
            f"{percentile(cl_pickup, 99):.1f} ms",
            percentile(cl_pickup, 99) <= 50,
        ),
        Target(
            "cross-process long-poll wake-up p99 ≤ 50 ms",
            f"{percentile(cl_wake, 99):.1f} ms",
            percentile(cl_wake, 99) <= 50,
        ),
    ]
    print()
    from common import print_targets  # noqa: PLC0415

    print_targets(targets)
    return report_json(
        args,
        machine_context(workdir),
        {"creates": args.creates, "vpses": args.vpses, "agents": agent_counts},
        targets,
        latency_ms=figures,
        drain=drains,
        get_throughput=gets,
    )


def add_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--iterations", type=positive, default=40, help="timed creates in part 1")
    parser.add_argument("--creates", type=positive, default=400, help="queued creates in part 2")
    parser.add_argument("--vpses", type=positive, default=40, help="VPSes they are spread over")
    parser.add_argument("--agents", default="1,2,4", help="agent counts in part 2")
    parser.add_argument("--get-seconds", type=float, default=5.0, help="each run of part 3")
    parser.add_argument("--concurrency", type=positive, default=16, help="requests in flight")


if __name__ == "__main__":
    spec = BenchSpec(
        "scale_out",
        __doc__,
        ("qemu-img", "qemu-io", "redis-server", "/usr/sbin/nginx"),
        "vpsnap-scale-",
        "the cluster's data dirs and disks go there",
    )
    sys.exit(bench_main(spec, add_options, run_benchmark))
