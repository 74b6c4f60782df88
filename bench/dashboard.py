"""How long do the panel's pages take to render on the server?

Issue 11's target: every page in under 100 ms of server time for a VPS with 10 snapshots. The
app runs in this process (real routes, middleware, SQLite store, templates), called over
httpx's ASGI transport, so what is timed is the server's work alone, without a network. Each
page is compared with the API's JSON listing of the same snapshots, measured in the same run
(the baseline: the same reads without rendering HTML), and with ``/healthz`` (the floor: the
middleware alone).

    .venv/bin/python bench/dashboard.py                # 200 timed requests per page
    .venv/bin/python bench/dashboard.py --iterations 50
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
from common import (
    RESULTS_DIR,
    Summary,
    Target,
    fmt_ratio,
    print_targets,
    render_table,
    write_json,
)

from vpsnap.api.app import create_app
from vpsnap.domain.model import (
    Consistency,
    Job,
    JobStatus,
    JobType,
    Snapshot,
    SnapshotOrigin,
    SnapshotStatus,
)
from vpsnap.domain.users import Role
from vpsnap.logging import configure_logging
from vpsnap.runtime import Runtime
from vpsnap.services.accounts import NewVps
from vpsnap.settings import Settings

TARGET_MS = 100.0
SNAPSHOTS = 10
PASSWORD = "benchmark passphrase"


async def seed(runtime: Runtime, disk: Path) -> str:
    """An account with an owner, one VPS (a real qcow2 path, disk images only) with 10
    available snapshots and 10 finished jobs; returns the VPS id."""
    services = runtime.services
    await services.accounts.create_account("bench")
    await services.users.create("bench", "owner@bench.example", Role.OWNER, PASSWORD)
    vps = await services.accounts.add_vps(
        NewVps(account_name="bench", name="bench-web", disks=(str(disk),), snapshot_slots=12)
    )
    now = datetime.now(UTC)
    async with runtime.store.transaction() as tx:
        for index in range(SNAPSHOTS):
            created = now - timedelta(hours=SNAPSHOTS - index)
            await tx.add_snapshot(
                Snapshot(
                    vps_id=vps.id,
                    name=f"snap-{index:02d}",
                    description=f"Before change {index}",
                    status=SnapshotStatus.AVAILABLE,
                    origin=SnapshotOrigin.MANUAL,
                    consistency=Consistency.CRASH,
                    includes_memory_state=False,
                    parent_name=f"snap-{index - 1:02d}" if index else None,
                    created_at=created,
                    expires_at=created + timedelta(hours=24),
                )
            )
            await tx.add_job(
                Job(
                    id=f"job_bench{index:02d}",
                    account_id=vps.account_id,
                    vps_id=vps.id,
                    type=JobType.SNAPSHOT_CREATE,
                    status=JobStatus.COMPLETED,
                    snapshot_name=f"snap-{index:02d}",
                    payload={},
                    progress=100,
                    result={"name": f"snap-{index:02d}"},
                    error=None,
                    attempts=1,
                    created_at=created,
                    finished_at=created,
                ),
                vps.node,
            )
    return vps.id


async def measure(args: argparse.Namespace, workdir: Path) -> dict[str, Summary]:
    disk = workdir / "bench-web.qcow2"
    proc = await asyncio.create_subprocess_exec(
        "qemu-img", "create", "-q", "-f", "qcow2", str(disk), "64M"
    )
    await proc.wait()
    settings = Settings(
        data_dir=workdir,
        rate_limit_per_key="1000000/minute",
        log_level="warning",
    )
    configure_logging("warning")
    runtime = Runtime.build(settings)
    await runtime.prepare()
    try:
        vps_id = await seed(runtime, disk)
        app = create_app(runtime.services, settings)
        transport = httpx.ASGITransport(app=app)
        base = "http://bench"
        async with httpx.AsyncClient(transport=transport, base_url=base) as client:
            login = await client.post(
                "/login",
                data={"email": "owner@bench.example", "password": PASSWORD},
                headers={"Origin": base},
            )
            assert login.status_code == 303, login.text
            pages = {
                "healthz (floor)": "/healthz",
                "API snapshot list (baseline)": f"/api/v2/vps/{vps_id}/snapshots",
                "VPS list": "/vps",
                "VPS page, 10 snapshots": f"/vps/{vps_id}",
                "job history": f"/vps/{vps_id}/jobs",
                "schedule": f"/vps/{vps_id}/schedule",
                "more slots": f"/vps/{vps_id}/slots",
                "restore confirmation": f"/vps/{vps_id}/snapshots/snap-05/restore",
            }
            results: dict[str, Summary] = {}
            for label, path in pages.items():
                timings = []
                for round_ in range(args.warmup + args.iterations):
                    started = time.perf_counter()
                    answer = await client.get(path)
                    elapsed = (time.perf_counter() - started) * 1000
                    assert answer.status_code == 200, (path, answer.status_code)
                    if round_ >= args.warmup:
                        timings.append(elapsed)
                results[label] = Summary.of(timings)
            page = await client.get(f"/vps/{vps_id}")
            assert page.text.count("data-snapshot=") == SNAPSHOTS
        return results
    finally:
        await runtime.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--iterations", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=20)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="vpsnap-bench-dash-") as tmp:
        results = asyncio.run(measure(args, Path(tmp)))
    baseline = results["API snapshot list (baseline)"].median
    rows = [
        [
            label,
            f"{s.median:.2f}",
            f"{s.p90:.2f}",
            fmt_ratio(s.median / baseline),
        ]
        for label, s in results.items()
    ]
    print(f"server time per request, ms ({args.iterations} timed after {args.warmup} warm-up):")
    print(render_table(["page", "median", "p90", "median / API baseline"], rows))
    print()
    pages = {k: v for k, v in results.items() if "floor" not in k and "baseline" not in k}
    targets = [
        Target(
            f"{label}: p90 under {TARGET_MS:.0f} ms",
            f"{summary.p90:.1f} ms",
            summary.p90 < TARGET_MS,
        )
        for label, summary in pages.items()
    ]
    print_targets(targets)
    write_json(
        RESULTS_DIR / "dashboard.json",
        {
            "iterations": args.iterations,
            "results": {k: v.as_dict() for k, v in results.items()},
            "targets": [t.as_dict() for t in targets],
        },
    )
    return 0 if all(t.met for t in targets) else 1


if __name__ == "__main__":
    sys.exit(main())
