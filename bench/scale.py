"""Fleet scale: background work and reads on a store of N VPSes and 10·N snapshots, on SQLite
and PostgreSQL, next to baselines measured in the same run.

Run from the repository root::

    .venv/bin/python bench/scale.py            # 100 / 1,000 and 10,000 / 100,000, both databases
    .venv/bin/python bench/scale.py --quick    # 100 / 1,000 and 1,000 / 10,000 (about a minute)
    .venv/bin/python bench/scale.py --phases startup http   # vpsnap serve alone

For each size and database it populates the store in bulk (multi-row inserts straight into the
tables, in chunks; the account and its API key through the services), one real qcow2 file per
VPS holding the VPS's 10 snapshots (tiny: 512-byte clusters, copied from one template, so
the disk side of reconciliation is the real qcow2 reader on real files), and measures:

- reads: ``GET /api/v2/vps`` (first and a deep page) and ``GET /api/v2/vps/{id}/snapshots``
  in-process over httpx's ASGI transport, p50/p99, next to a bare FastAPI app returning the
  same JSON (the baseline of the same run, timed in turns of 10 requests with vpsnap's so that
  both see the same load; ``% of bare`` is bare p50 / vpsnap p50);
- reconciliation of the node: the first pass, an unchanged pass, and a pass after 1 % of the
  disks changed (their mtime moved: the reconciler must read them again);
- the node's power-state pass (the observer's refresh over every VPS, real QEMU driver, no VM
  running: each state is whether the VPS's disk files exist), unpaced, three times, wall and
  CPU seconds;
- the retention sweep of every snapshot (all expired: the clock is moved 3 days ahead),
  enqueue only, while a reader lists snapshots (its p99 shows whether the sweep holds a lock
  the API needs), then checks that every snapshot is ``deleting`` and covered by a job; the
  sweep's own statements are timed (what is left of its time is Python and the event loop);
- ``vpsnap serve`` on that data dir (and, on PostgreSQL, that database), every size and
  database: time from the spawn to the first served ``GET /api/v2/vps`` and the server's CPU
  until then, list latency and server CPU over the following seconds, RSS idle; then
  requests/s of the two list endpoints over HTTP (``bench/http_load.py``, its own process)
  next to a bare FastAPI app serving the same JSON with the same uvicorn settings
  (``bench/bare_http.py``), in alternating turns, and the server's RSS under that load.

Exit status 0 when it ran (targets may be MISSED), 1 when it could not run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from common import (
    RESULTS_DIR,
    BenchError,
    bare_app,
    fmt_ratio,
    free_port,
    log_tail,
    machine_context,
    percentile,
    progress,
    render_table,
    run,
    server_env,
    stop,
    vpsnap_command,
    write_json,
)

PG_URL = os.environ.get("VPSNAP_BENCH_POSTGRES_URL", "postgresql+asyncpg://postgres@127.0.0.1/test")
SNAPSHOTS_PER_VPS = 10
INSERT_CHUNK = 2000
ACCOUNT = "bench"
NODE = "local"
# Targets of issue 15 (per run, on the largest size).
SWEEP_TARGET_S = 30.0
RECONCILE_TARGET_S = 5.0
READ_SHARE_TARGET = 0.60
LIST_P99_TARGET_MS = 10.0
STARTUP_TARGET_S = 2.0


PHASES = ("reads", "reconcile", "power", "startup", "http", "sweep")


class FixedClock:
    """The bench's clock: a moment that only the bench moves."""

    def __init__(self, moment: datetime) -> None:
        self.moment = moment

    def now(self) -> datetime:
        return self.moment


@dataclass(slots=True)
class Size:
    vps: int

    @property
    def snapshots(self) -> int:
        return self.vps * SNAPSHOTS_PER_VPS

    @property
    def label(self) -> str:
        return f"{self.vps:,}/{self.snapshots:,}"


@dataclass(slots=True)
class Result:
    backend: str
    size: Size
    populate_s: float = 0.0
    reads: dict[str, dict[str, float]] = field(default_factory=dict)
    reconcile: dict[str, float] = field(default_factory=dict)
    reconcile_findings: dict[str, int] = field(default_factory=dict)
    # The node's power-state pass (unpaced, nothing changed): wall and this process's CPU
    # seconds, per run.
    power: list[tuple[float, float]] = field(default_factory=list)
    swept: bool = False
    sweep_s: float = 0.0
    sweep_jobs: int = 0
    sweep_reader_p99_ms: float = 0.0
    sweep_reader_max_ms: float = 0.0
    # The sweep's own statements (the reader's are not counted): seconds and count by the
    # statement's first words, from the driver call to its return (server and round trip).
    sweep_statements: dict[str, tuple[float, int]] = field(default_factory=dict)
    startup: dict[str, float] = field(default_factory=dict)


# -- disks --------------------------------------------------------------------------------------


def make_template(path: Path) -> None:
    """A 1 MiB qcow2 with 512-byte clusters (a few KiB on disk) and snapshots s0..s9."""
    run(["qemu-img", "create", "-q", "-f", "qcow2", "-o", "cluster_size=512", path, "1M"])
    for i in range(SNAPSHOTS_PER_VPS):
        run(["qemu-img", "snapshot", "-c", f"s{i}", path])


def snapshot_dates(path: Path) -> dict[str, datetime]:
    from vpsnap.drivers.qcow2 import read_image  # noqa: PLC0415

    return {s.name: s.created_at for s in read_image(path).snapshots}


def make_disks(template: Path, directory: Path, count: int) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    paths = [directory / f"d{i:06d}.qcow2" for i in range(count)]
    for path in paths:
        if not path.exists():
            shutil.copyfile(template, path)
    return paths


# -- the store ----------------------------------------------------------------------------------


async def open_store(backend: str, workdir: Path) -> tuple[Any, str | None]:
    """A migrated, empty store; for PostgreSQL also the URL of its private database (dropped
    later). A database, not a schema: ``vpsnap serve`` (the start-up and HTTP phases) is given
    it as ``VPSNAP_DATABASE_URL`` and has no setting for a schema."""
    from vpsnap.store import migrate  # noqa: PLC0415
    from vpsnap.store.sql import SqlStore  # noqa: PLC0415

    if backend == "sqlite":
        workdir.mkdir(parents=True, exist_ok=True)  # noqa: ASYNC240 - set-up, not measured
        store = SqlStore.from_url(f"sqlite+aiosqlite:///{workdir / 'vpsnap.db'}")
        await migrate.upgrade(store.engine)
        return store, None
    name = f"vpsnap_bench_{secrets.token_hex(4)}"
    await _admin_sql(f'CREATE DATABASE "{name}"')
    url = _database_url(name)
    store = SqlStore.from_url(url)
    await migrate.upgrade(store.engine)
    return store, url


def _database_url(name: str) -> str:
    import sqlalchemy as sa  # noqa: PLC0415

    return sa.make_url(PG_URL).set(database=name).render_as_string(hide_password=False)


async def _admin_sql(statement: str) -> None:
    """One statement outside a transaction (CREATE/DROP DATABASE) on ``PG_URL``'s database."""
    import sqlalchemy as sa  # noqa: PLC0415
    from sqlalchemy.ext.asyncio import create_async_engine  # noqa: PLC0415

    engine = create_async_engine(PG_URL, isolation_level="AUTOCOMMIT")
    async with engine.connect() as conn:
        await conn.execute(sa.text(statement))
    await engine.dispose()


async def drop_database(url: str) -> None:
    import sqlalchemy as sa  # noqa: PLC0415

    name = sa.make_url(url).database
    await _admin_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def bench_settings(data_dir: Path) -> Any:
    from vpsnap.settings import Settings  # noqa: PLC0415

    return Settings(
        data_dir=data_dir,
        node=NODE,
        rate_limit_per_key="10000000/minute",
        rate_limit_per_ip="10000000/minute",
        allowed_hosts=["testserver", "127.0.0.1"],
        password_hash_time_cost=1,
        password_hash_memory_kib=8 * 1024,
        password_hash_parallelism=1,
    )


async def populate(
    runtime: Any, size: Size, disks: list[Path], dates: dict[str, datetime], now: datetime
) -> tuple[str, list[str]]:
    """Account and key through the services; VPSes and snapshots in multi-row inserts. Returns
    the key and the VPS ids in id order."""
    from vpsnap.domain.auth import Scope  # noqa: PLC0415
    from vpsnap.domain.ids import new_id  # noqa: PLC0415
    from vpsnap.store.tables import snapshots, vps  # noqa: PLC0415

    account = await runtime.services.accounts.create_account(ACCOUNT)
    issued = await runtime.services.credentials.issue(ACCOUNT, frozenset({Scope.WRITE_ALL}))
    ids = sorted(new_id("vps") for _ in range(size.vps))
    vps_rows = [
        {
            "id": vps_id,
            "account_id": account.id,
            "name": f"vm-{i:06d}",
            "name_key": f"vm-{i:06d}",
            "node": NODE,
            "disks": [str(disks[i])],
            "snapshot_slots": SNAPSHOTS_PER_VPS + 2,
            "service_status": "active",
            "primary_ip": f"10.{i // 65536}.{i // 256 % 256}.{i % 256}",
            "operating_system": None,
            "resources": {"cpu_cores": 2, "memory_gb": 2.0, "storage_gb": 20.0},
            "billing": None,
            "current_snapshot": f"s{SNAPSHOTS_PER_VPS - 1}",
            "created_at": now - timedelta(days=30),
            "plan": None,
            "machine": None,
            "power_state": "stopped",
            "power_state_at": now,
        }
        for i, vps_id in enumerate(ids)
    ]
    snapshot_rows = [
        {
            "vps_id": vps_id,
            "name_key": f"s{k}",
            "name": f"s{k}",
            "description": None,
            "status": "available",
            "origin": "manual",
            "consistency": "crash",
            "includes_memory_state": False,
            "parent_name": f"s{k - 1}" if k else None,
            "created_at": now - timedelta(hours=2, minutes=-k),
            "expires_at": now + timedelta(hours=34, minutes=k),
            "disk_created_at": dates[f"s{k}"],
            "missing_since": None,
            "vm_config": None,
            "consistency_reason": None,
        }
        for vps_id in ids
        for k in range(SNAPSHOTS_PER_VPS)
    ]
    for table, rows in ((vps, vps_rows), (snapshots, snapshot_rows)):
        for start in range(0, len(rows), INSERT_CHUNK):
            async with runtime.store.engine.begin() as conn:
                await conn.execute(table.insert(), rows[start : start + INSERT_CHUNK])
    if runtime.store.is_postgres:
        import sqlalchemy as sa  # noqa: PLC0415

        # Fresh planner statistics, as autovacuum would have them on a live system.
        async with runtime.store.engine.connect() as conn:
            await conn.execute(sa.text("COMMIT"))
            await conn.execute(sa.text("ANALYZE"))
    await runtime.observer().heartbeat()
    return issued.secret, ids


# -- reads --------------------------------------------------------------------------------------


async def time_gets(
    client: httpx.AsyncClient, url: str, headers: dict[str, str], n: int, warmup: int
) -> tuple[list[float], Any]:
    body: Any = None
    for _ in range(warmup):
        response = await client.get(url, headers=headers)
        if response.status_code != 200:
            raise BenchError(f"GET {url} answered {response.status_code}: {response.text[:300]}")
        body = response.json()
    samples = []
    for _ in range(n):
        started = time.perf_counter()
        response = await client.get(url, headers=headers)
        samples.append((time.perf_counter() - started) * 1000)
        if response.status_code != 200:
            raise BenchError(f"GET {url} answered {response.status_code}")
    return samples, body


# Requests per turn when vpsnap and the bare app take turns: the machine's load changes from
# second to second (other engineers' suites), so both sides are timed in the same seconds.
TURN = 10


async def measure_reads(
    runtime: Any, settings: Any, key: str, ids: list[str], iterations: int, warmup: int
) -> dict[str, dict[str, float]]:
    from vpsnap.api.app import create_app  # noqa: PLC0415
    from vpsnap.services.pagination import encode_cursor  # noqa: PLC0415

    app = create_app(runtime.services, settings)
    headers = {"Authorization": f"Bearer {key}"}
    deep = ids[max(len(ids) - 40, 0)]
    urls = {
        "list, first page": "/api/v2/vps?limit=20",
        "list, deep page": f"/api/v2/vps?limit=20&cursor={encode_cursor(deep)}",
        "snapshots (10)": f"/api/v2/vps/{ids[len(ids) // 2]}/snapshots",
    }
    figures: dict[str, dict[str, float]] = {}
    bodies: dict[str, Any] = {}
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        for label, url in urls.items():
            _, bodies[label] = await time_gets(client, url, headers, 0, warmup)
        bare = bare_app({f"/bare/{i}": bodies[label] for i, label in enumerate(urls)})
        bare_transport = httpx.ASGITransport(app=bare)
        async with httpx.AsyncClient(
            transport=bare_transport, base_url="http://testserver"
        ) as bare_client:
            for i, (label, url) in enumerate(urls.items()):
                _, body = await time_gets(bare_client, f"/bare/{i}", {}, 0, warmup)
                if body != bodies[label]:
                    raise BenchError("the bare app did not serve the same JSON")
                ours: list[float] = []
                theirs: list[float] = []
                # CPU seconds of this process per side (client and app share it, as wall time
                # does): unlike wall time, hardly moved by the other processes on the machine.
                cpu = {"ours": 0.0, "bare": 0.0}
                while len(ours) < iterations:
                    turn = min(TURN, iterations - len(ours))
                    started = time.process_time()
                    ours += (await time_gets(client, url, headers, turn, 0))[0]
                    middle = time.process_time()
                    theirs += (await time_gets(bare_client, f"/bare/{i}", {}, turn, 0))[0]
                    cpu["ours"] += middle - started
                    cpu["bare"] += time.process_time() - middle
                figures[label] = {
                    "p50": statistics.median(ours),
                    "p99": percentile(ours, 99),
                    "bare_p50": statistics.median(theirs),
                    "bare_p99": percentile(theirs, 99),
                    "cpu": cpu["ours"] / len(ours) * 1000,
                    "bare_cpu": cpu["bare"] / len(theirs) * 1000,
                }
    return figures


# -- reconcile ----------------------------------------------------------------------------------


async def measure_reconcile(
    runtime: Any, disks: list[Path], clock: FixedClock
) -> tuple[dict[str, float], dict[str, int]]:
    import inspect  # noqa: PLC0415

    from vpsnap.scheduler import reconcile as reconciliation  # noqa: PLC0415

    driver = runtime.hypervisor()
    extra: dict[str, Any] = {}
    # The incremental reconciler keeps what it saw between passes (issue 15).
    if "seen" in inspect.signature(reconciliation.reconcile).parameters:
        extra["seen"] = reconciliation.DiskFingerprints()
    times: dict[str, float] = {}
    findings: dict[str, int] = {}

    async def one_pass(label: str) -> None:
        started = time.perf_counter()
        report = await reconciliation.reconcile(runtime.store, driver, NODE, clock=clock, **extra)
        times[label] = time.perf_counter() - started
        for finding in report.findings:
            findings[finding.action.value] = findings.get(finding.action.value, 0) + 1

    await one_pass("first pass")
    await one_pass("unchanged")
    changed = disks[::100] if len(disks) >= 100 else disks[:1]
    for path in changed:
        stat = path.stat()
        os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    await one_pass("1 % changed")
    return times, findings


# -- power states -------------------------------------------------------------------------------


async def measure_power(runtime: Any, runs: int = 3) -> list[tuple[float, float]]:
    """The node observer's power-state pass over every VPS (the real QEMU driver: no VM runs,
    so each VPS's state is whether its disk files exist), unpaced (outside the scheduler),
    ``runs`` times: (wall seconds, CPU seconds of this process) each. Nothing changes between
    passes, so each reads every VPS and writes nothing."""
    observer = runtime.observer()
    times = []
    for _ in range(runs):
        wall, cpu = time.perf_counter(), time.process_time()
        changed = await observer.refresh_power_states()
        times.append((time.perf_counter() - wall, time.process_time() - cpu))
        if changed:
            raise BenchError(f"the power-state pass changed {changed} states (expected none)")
    return times


# -- sweep --------------------------------------------------------------------------------------


def time_statements(
    engine: Any, task: asyncio.Future[Any], into: dict[str, tuple[float, int]]
) -> Any:
    """Add the time of each statement ``task`` runs on ``engine`` to ``into`` (by its first
    words); returns the function that stops timing."""
    from sqlalchemy import event  # noqa: PLC0415

    sync_engine = engine.sync_engine

    def before(conn: Any, *_: Any) -> None:
        # The listener runs inside the task's step (SQLAlchemy's greenlet), so the current
        # task tells the sweep's statements from the reader's.
        if asyncio.current_task() is task:
            conn.info["bench_started"] = time.perf_counter()

    def after(conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        started = conn.info.pop("bench_started", None)
        if started is not None:
            key = " ".join(statement.split()[:3])
            seconds, count = into.get(key, (0.0, 0))
            into[key] = (seconds + time.perf_counter() - started, count + 1)

    event.listen(sync_engine, "before_cursor_execute", before)
    event.listen(sync_engine, "after_cursor_execute", after)

    def stop() -> None:
        event.remove(sync_engine, "before_cursor_execute", before)
        event.remove(sync_engine, "after_cursor_execute", after)

    return stop


async def measure_sweep(
    runtime: Any,
    key: str,
    settings: Any,
    ids: list[str],
    clock: FixedClock,
    size: Size,
    timeout: float,
    statements: dict[str, tuple[float, int]],
) -> tuple[float, int, float, float]:
    """Seconds the sweep took (inf past ``timeout``: it is cancelled), jobs queued, and the
    concurrent reader's p99 and max (ms); ``statements`` gets the sweep's statement times."""
    from vpsnap.api.app import create_app  # noqa: PLC0415
    from vpsnap.domain.model import SnapshotStatus  # noqa: PLC0415
    from vpsnap.scheduler.retention import sweep_expired  # noqa: PLC0415

    clock.moment += timedelta(days=3)
    app = create_app(runtime.services, settings)
    headers = {"Authorization": f"Bearer {key}"}
    reader_ms: list[float] = []
    done = asyncio.Event()

    async def reader() -> None:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            i = 0
            while not done.is_set():
                started = time.perf_counter()
                await client.get(f"/api/v2/vps/{ids[i % len(ids)]}/snapshots", headers=headers)
                reader_ms.append((time.perf_counter() - started) * 1000)
                i += 7
                await asyncio.sleep(0.01)

    reading = asyncio.create_task(reader())
    started = time.perf_counter()
    timed_out = False
    sweeping = asyncio.ensure_future(sweep_expired(runtime.store, runtime.events, clock))
    stop_timing = time_statements(runtime.store.engine, sweeping, statements)
    try:
        job_ids = await asyncio.wait_for(sweeping, timeout)
    except TimeoutError:
        job_ids, timed_out = [], True
    finally:
        elapsed = time.perf_counter() - started
        stop_timing()
        done.set()
        await reading
    if timed_out:
        return math.inf, 0, percentile(reader_ms, 99), max(reader_ms, default=0.0)
    async with runtime.store.transaction(read_only=True) as tx:
        deleting = await tx.count_snapshots(SnapshotStatus.DELETING)
    if deleting != size.snapshots:
        raise BenchError(f"the sweep left {size.snapshots - deleting} snapshots not deleting")
    return elapsed, len(job_ids), percentile(reader_ms, 99), max(reader_ms, default=0.0)


# -- start-up -----------------------------------------------------------------------------------


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _get_ok(client: httpx.Client, url: str) -> Any:
    response = client.get(url)
    if response.status_code != 200:
        raise BenchError(f"GET {url} answered {response.status_code}: {response.text[:300]}")
    return response.json()


def _wait_answering(
    client: httpx.Client, url: str, process: subprocess.Popen[bytes], log: Path
) -> float:
    """The ``time.perf_counter()`` at which ``url`` first answered 200 (polled every 10 ms);
    raises if the process exits or 60 s pass."""
    deadline = time.monotonic() + 60
    last = "no connection"
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise BenchError(f"{process.args!r} exited:\n{log_tail(log)}")
        try:
            response = client.get(url)
        except httpx.TransportError as exc:
            last = repr(exc)
            time.sleep(0.01)
            continue
        if response.status_code == 200:
            return time.perf_counter()
        last = f"{response.status_code} {response.text[:300]}"
        time.sleep(0.01)
    raise BenchError(f"{url} did not answer in 60 s (last: {last}):\n{log_tail(log)}")


def http_load(url: str, seconds: float, connections: int, headers: list[str]) -> dict[str, float]:
    """``bench/http_load.py`` in a process of its own: requests/s and latencies over HTTP."""
    cmd = [sys.executable, str(Path(__file__).with_name("http_load.py")), url]
    cmd += ["--seconds", str(seconds), "--connections", str(connections)]
    for header in headers:
        cmd += ["--header", header]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60, check=False)
    if done.returncode != 0:
        raise BenchError(f"http_load.py {url}: {done.stderr.strip()[-500:]}")
    result: dict[str, float] = json.loads(done.stdout)
    return result


def measure_server(
    data_dir: Path, key: str, vps_id: str, args: argparse.Namespace, database_url: str | None
) -> dict[str, float]:
    """``vpsnap serve`` on the populated data dir (and database): time to the first answered
    list and the CPU until then; ``args.startup_watch`` seconds of list requests (one at a
    time, 20 ms apart) with the server's CPU; its RSS after 2 s without requests ("idle");
    then, with the HTTP phase, requests/s of the two list endpoints next to a bare FastAPI app
    serving the same JSON with the same uvicorn settings (``bench/bare_http.py``), in
    alternating turns, and the server's largest RSS while loaded."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    data_dir.mkdir(parents=True, exist_ok=True)  # PostgreSQL's: the server's lock and files
    log_path = data_dir / "serve.log"
    cmd = [*vpsnap_command(), "serve", "--port", str(port), "--data-dir", str(data_dir)]
    extra = {"VPSNAP_NODE": NODE}
    if database_url is not None:
        extra["VPSNAP_DATABASE_URL"] = database_url
    env = server_env(extra)
    auth = f"Bearer {key}"
    paths = {"list": "/api/v2/vps?limit=20", "snapshots": f"/api/v2/vps/{vps_id}/snapshots"}
    figures: dict[str, float] = {}
    bare: subprocess.Popen[bytes] | None = None
    with log_path.open("wb") as log:
        started = time.perf_counter()
        process = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        with httpx.Client(base_url=base, headers={"Authorization": auth}, timeout=10) as client:
            answered = _wait_answering(client, paths["list"], process, log_path)
            figures["first_request_s"] = answered - started  # from the spawn
            figures["cpu_s_to_first"] = _cpu_seconds(process.pid)
            samples = []
            until = time.monotonic() + args.startup_watch
            while time.monotonic() < until:
                t0 = time.perf_counter()
                _get_ok(client, paths["list"])
                samples.append((time.perf_counter() - t0) * 1000)
                time.sleep(0.02)
            figures["cpu_s_first_window"] = _cpu_seconds(process.pid) - figures["cpu_s_to_first"]
            figures["window_s"] = args.startup_watch
            figures["list_p50_ms"] = statistics.median(samples)
            figures["list_p99_ms"] = percentile(samples, 99)
            time.sleep(2.0)
            figures["rss_idle_mib"] = _rss_mib(process.pid)
            if "http" not in args.phases:
                figures["cpu_s_total"] = _cpu_seconds(process.pid)
                return figures
            bodies = {path: _get_ok(client, path) for path in paths.values()}
        bodies_file = data_dir / "bare-bodies.json"
        # The bare app's routes are the paths without their query (it ignores ``limit``).
        bodies_file.write_text(json.dumps({p.split("?")[0]: b for p, b in bodies.items()}))
        bare_port = free_port()
        bare_log = data_dir / "bare.log"
        with bare_log.open("wb") as log:
            bare_script = str(Path(__file__).with_name("bare_http.py"))
            bare = subprocess.Popen(
                [sys.executable, bare_script, str(bare_port), str(bodies_file)],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        bare_base = f"http://127.0.0.1:{bare_port}"
        with httpx.Client(base_url=bare_base, timeout=10) as bare_client:
            _wait_answering(bare_client, paths["list"], bare, bare_log)
            for path, body in bodies.items():
                if _get_ok(bare_client, path) != body:
                    raise BenchError("the bare app did not serve the same JSON")
        turn_s = args.http_seconds / HTTP_TURNS
        peak_rss = 0.0
        totals: dict[str, list[float]] = {}
        for _ in range(HTTP_TURNS):
            for label, path in paths.items():
                for side, url, headers in (
                    ("vpsnap", base + path, [f"Authorization: {auth}"]),
                    ("bare", bare_base + path, []),
                ):
                    sampling = _RssSampler(process.pid) if side == "vpsnap" else None
                    try:
                        result = http_load(url, turn_s, args.http_connections, headers)
                    finally:
                        if sampling is not None:
                            peak_rss = max(peak_rss, sampling.stop())
                    total = totals.setdefault(f"{label}_{side}", [0.0, 0.0])
                    total[0] += result["requests"]
                    total[1] += result["seconds"]
        for name, (requests, seconds) in totals.items():
            figures[f"{name}_rps"] = requests / seconds
        figures["rss_load_mib"] = peak_rss
        figures["cpu_s_total"] = _cpu_seconds(process.pid)
        return figures
    finally:
        if bare is not None:
            stop(bare)
        stop(process)


# Turns of each side's HTTP load: vpsnap and the bare app alternate, so both see the machine's
# load of the same seconds.
HTTP_TURNS = 2


class _RssSampler:
    """The largest RSS of ``pid`` while it runs (sampled every 50 ms in a thread)."""

    def __init__(self, pid: int) -> None:
        import threading  # noqa: PLC0415

        self.pid = pid
        self.peak = 0.0
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._done.is_set():
            self.peak = max(self.peak, _rss_mib(self.pid))
            self._done.wait(0.05)

    def stop(self) -> float:
        self._done.set()
        self._thread.join()
        return self.peak


# -- one size on one database -------------------------------------------------------------------


async def run_one(
    backend: str,
    size: Size,
    workdir: Path,
    disks: list[Path],
    dates: dict[str, datetime],
    args: argparse.Namespace,
    *,
    startup: bool,
) -> Result:
    from vpsnap.runtime import Runtime  # noqa: PLC0415

    result = Result(backend, size)
    data_dir = workdir / f"{backend}-{size.vps}"
    store, database_url = await open_store(backend, data_dir)
    settings = bench_settings(data_dir)
    now = datetime.now(UTC)
    clock = FixedClock(now)
    runtime = Runtime.build(settings, store=store, clock=clock)
    try:
        progress(f"[{backend} {size.label}] populating")
        started = time.perf_counter()
        key, ids = await populate(runtime, size, disks, dates, now)
        result.populate_s = time.perf_counter() - started
        if "reads" in args.phases:
            progress(f"[{backend} {size.label}] reads")
            result.reads = await measure_reads(
                runtime, settings, key, ids, args.iterations, args.warmup
            )
        if "reconcile" in args.phases:
            progress(f"[{backend} {size.label}] reconcile")
            result.reconcile, result.reconcile_findings = await measure_reconcile(
                runtime, disks, clock
            )
        if "power" in args.phases:
            progress(f"[{backend} {size.label}] power-state pass")
            result.power = await measure_power(runtime)
        if startup and {"startup", "http"} & set(args.phases):
            progress(f"[{backend} {size.label}] vpsnap serve: start-up, HTTP")
            await store.dispose()
            result.startup = await asyncio.to_thread(
                measure_server, data_dir, key, ids[len(ids) // 2], args, database_url
            )
        if "sweep" not in args.phases:
            return result
        progress(f"[{backend} {size.label}] retention sweep")
        (
            result.sweep_s,
            result.sweep_jobs,
            result.sweep_reader_p99_ms,
            result.sweep_reader_max_ms,
        ) = await measure_sweep(
            runtime, key, settings, ids, clock, size, args.sweep_timeout, result.sweep_statements
        )
        result.swept = True
    finally:
        await store.dispose()
        if database_url is not None:
            await drop_database(database_url)
    return result


# -- report -------------------------------------------------------------------------------------


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def print_report(results: list[Result]) -> list[tuple[str, str, bool]]:
    largest = max(r.size.vps for r in results)
    smallest = min(r.size.vps for r in results)
    by = {(r.backend, r.size.vps): r for r in results}

    def growth(r: Result, value: float, pick: Any) -> str:
        small = by.get((r.backend, smallest))
        if small is None or r.size.vps == smallest:
            return ""
        base = pick(small)
        return fmt_ratio(value / base) if base else ""

    rows = []
    for r in results:
        rows.append(  # noqa: PERF401 - one row per result, read as a table
            [
                f"{r.backend} {r.size.label}",
                f"{r.populate_s:.1f}",
                _seconds(r.sweep_s if r.swept else None),
                str(r.sweep_jobs) if r.swept else "-",
                f"{r.sweep_reader_p99_ms:.1f}" if r.swept else "-",
                _seconds(r.reconcile.get("first pass")),
                _seconds(r.reconcile.get("unchanged")),
                _seconds(r.reconcile.get("1 % changed")),
                growth(r, r.sweep_s, lambda s: s.sweep_s),
                growth(
                    r, r.reconcile.get("unchanged", 0), lambda s: s.reconcile.get("unchanged", 0)
                ),
            ]
        )
    print("background work (seconds; growth = this size over the smallest, same database)")
    print(
        render_table(
            [
                "database VPS/snapshots",
                "populate",
                "sweep",
                "jobs",
                "reader p99 ms",
                "reconcile 1st",
                "unchanged",
                "1% changed",
                "sweep growth",
                "reconcile growth",
            ],
            rows,
        )
    )
    print()
    rows = []
    for r in results:
        for label, f in r.reads.items():
            rows.append(
                [
                    f"{r.backend} {r.size.label} {label}",
                    f"{f['p50']:.2f}",
                    f"{f['p99']:.2f}",
                    f"{f['bare_p50']:.2f}",
                    f"{f['bare_p99']:.2f}",
                    f"{f['bare_p50'] / f['p50'] * 100:.0f} %",
                    f"{f['cpu']:.2f}",
                    f"{f['bare_cpu']:.2f}",
                    f"{f['bare_cpu'] / f['cpu'] * 100:.0f} %",
                ]
            )
    if rows:
        print(
            "reads in-process (ms; % of bare = bare p50 / vpsnap p50; cpu = CPU ms per request "
            "of this process, client included, both sides)"
        )
        print(
            render_table(
                [
                    "request",
                    "p50",
                    "p99",
                    "bare p50",
                    "bare p99",
                    "% of bare",
                    "cpu",
                    "bare cpu",
                    "cpu % of bare",
                ],
                rows,
            )
        )
    rows = [
        [
            f"{r.backend} {r.size.label}",
            ", ".join(f"{wall:.2f}" for wall, _ in r.power),
            ", ".join(f"{cpu:.2f}" for _, cpu in r.power),
        ]
        for r in results
        if r.power
    ]
    if rows:
        print("\npower-state pass, unpaced, nothing changed (seconds, each run)")
        print(render_table(["database VPS/snapshots", "wall", "CPU"], rows))
    rows = []
    for r in results:
        if not r.startup:
            continue
        s = r.startup

        def share(label: str, s: dict[str, float] = s) -> str:
            ours, bare = s.get(f"{label}_vpsnap_rps"), s.get(f"{label}_bare_rps")
            return f"{ours / bare * 100:.0f} %" if ours and bare else "-"

        def rps(name: str, s: dict[str, float] = s) -> str:
            return f"{s[name]:.0f}" if name in s else "-"

        rows.append(
            [
                f"{r.backend} {r.size.label}",
                f"{s['first_request_s']:.2f}",
                f"{s['cpu_s_to_first']:.2f}",
                growth(r, s["first_request_s"], lambda x: x.startup.get("first_request_s", 0)),
                f"{s['list_p50_ms']:.1f} / {s['list_p99_ms']:.1f}",
                f"{s['cpu_s_first_window']:.1f}",
                rps("list_vpsnap_rps"),
                rps("list_bare_rps"),
                share("list"),
                rps("snapshots_vpsnap_rps"),
                rps("snapshots_bare_rps"),
                share("snapshots"),
                f"{s['rss_idle_mib']:.0f}",
                f"{s['rss_load_mib']:.0f}" if "rss_load_mib" in s else "-",
                growth(
                    r,
                    s.get("list_vpsnap_rps", 0),
                    lambda x: x.startup.get("list_vpsnap_rps", 0),
                ),
            ]
        )
    if rows:
        print(
            "\nvpsnap serve over HTTP (first answer: s from the spawn to the first 200 of the "
            "list, CPU s until then; then list p50/p99 ms and server CPU s over the watch "
            "window; requests/s next to a bare FastAPI app with the same JSON and uvicorn "
            "settings, % = vpsnap / bare; RSS MiB idle and under load)"
        )
        print(
            render_table(
                [
                    "database VPS/snapshots",
                    "first answer",
                    "CPU",
                    "growth",
                    "list ms",
                    "CPU in window",
                    "list rps",
                    "bare",
                    "%",
                    "snapshots rps",
                    "bare",
                    "%",
                    "RSS idle",
                    "RSS load",
                    "rps growth",
                ],
                rows,
            )
        )
    for r in results:
        if r.sweep_statements and r.size.vps == largest:
            print(f"\nsweep statements, {r.backend} {r.size.label} (s, calls; the rest is Python)")
            ranked = sorted(r.sweep_statements.items(), key=lambda kv: -kv[1][0])
            print(
                render_table(
                    ["statement", "seconds", "calls"],
                    [[k, f"{t:.2f}", str(n)] for k, (t, n) in ranked],
                )
            )
    for r in results:
        if r.reconcile_findings:
            print(f"\nreconcile findings, {r.backend} {r.size.label}: {r.reconcile_findings}")
    targets: list[tuple[str, str, bool]] = []
    for r in results:
        if r.size.vps != largest:
            continue
        name = f"{r.backend} {r.size.label}"
        if r.swept:
            targets.append(
                (
                    f"{name}: sweep < {SWEEP_TARGET_S:g} s",
                    f"{r.sweep_s:.2f} s",
                    r.sweep_s < SWEEP_TARGET_S,
                )
            )
        if r.reconcile:
            unchanged = r.reconcile["unchanged"]
            targets.append(
                (
                    f"{name}: unchanged reconcile < {RECONCILE_TARGET_S:g} s",
                    f"{unchanged:.2f} s",
                    unchanged < RECONCILE_TARGET_S,
                )
            )
        for label, f in r.reads.items():
            share = f["bare_p50"] / f["p50"]
            targets.append(
                (
                    f"{name}: {label} >= {READ_SHARE_TARGET:.0%} of bare",
                    f"{share:.0%}",
                    share >= READ_SHARE_TARGET,
                )
            )
            if label.startswith("list"):
                targets.append(
                    (
                        f"{name}: {label} p99 < {LIST_P99_TARGET_MS:g} ms",
                        f"{f['p99']:.2f} ms",
                        f["p99"] < LIST_P99_TARGET_MS,
                    )
                )
        if r.startup:
            first = r.startup["first_request_s"]
            targets.append(
                (
                    f"{name}: serves within {STARTUP_TARGET_S:g} s",
                    f"{first:.2f} s",
                    first < STARTUP_TARGET_S,
                )
            )
            for label in ("list", "snapshots"):
                ours = r.startup.get(f"{label}_vpsnap_rps")
                bare = r.startup.get(f"{label}_bare_rps")
                if ours and bare:
                    targets.append(
                        (
                            f"{name}: {label} requests/s over HTTP >= "
                            f"{READ_SHARE_TARGET:.0%} of bare",
                            f"{ours / bare:.0%}",
                            ours / bare >= READ_SHARE_TARGET,
                        )
                    )
    print("\ntargets:")
    for description, measured, met in targets:
        print(f"  [{'met' if met else 'MISSED':>6}] {description}: {measured}")
    return targets


async def main_async(args: argparse.Namespace, workdir: Path) -> list[Result]:
    template = workdir / "template.qcow2"
    make_template(template)
    dates = snapshot_dates(template)
    sizes = [Size(100), Size(1000 if args.quick else 10_000)]
    if args.vps:
        sizes = [Size(100), Size(args.vps)]
    results = []
    for size in sizes:
        progress(f"[{size.label}] {size.vps} disk files")
        disks = await asyncio.to_thread(
            make_disks, template, workdir / f"disks-{size.vps}", size.vps
        )
        for backend in args.databases:
            results.append(  # noqa: PERF401 - one after another, never concurrently
                await run_one(
                    backend,
                    size,
                    workdir,
                    disks,
                    dates,
                    args,
                    startup=not args.no_startup,
                )
            )
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="100 and 1,000 VPSes only")
    parser.add_argument("--vps", type=int, default=0, help="the large size (default 10,000)")
    parser.add_argument("--iterations", type=int, default=300, help="timed requests per read")
    parser.add_argument("--warmup", type=int, default=30, help="untimed requests first")
    parser.add_argument(
        "--databases", nargs="+", default=["sqlite", "postgres"], choices=["sqlite", "postgres"]
    )
    parser.add_argument("--no-startup", action="store_true", help="skip the vpsnap serve run")
    parser.add_argument(
        "--phases",
        nargs="+",
        default=list(PHASES),
        choices=PHASES,
        help="what to measure (default: all)",
    )
    parser.add_argument("--startup-watch", type=float, default=10.0, help="seconds watched")
    parser.add_argument(
        "--http-seconds", type=float, default=4.0, help="HTTP load per endpoint and side (s)"
    )
    parser.add_argument(
        "--http-connections", type=int, default=4, help="keep-alive connections of the load"
    )
    parser.add_argument(
        "--sweep-timeout", type=float, default=300.0, help="a sweep past it is cancelled (s)"
    )
    parser.add_argument(
        "--loop",
        choices=["asyncio", "uvloop"],
        default="asyncio",
        help="event loop of the in-process measurements (vpsnap serve runs on asyncio's)",
    )
    parser.add_argument("--work-dir", type=Path, default=None)
    parser.add_argument("--keep", action="store_true", help="keep the temp dir")
    args = parser.parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="vpsnap-scale-", dir=args.work_dir))
    from vpsnap.logging import configure_logging  # noqa: PLC0415

    # The per-request and per-finding log lines would cost more than what is measured.
    configure_logging("warning", "json")
    try:
        started = time.perf_counter()
        if args.loop == "uvloop":
            import uvloop  # noqa: PLC0415

            results = uvloop.run(main_async(args, workdir))
        else:
            results = asyncio.run(main_async(args, workdir))
        targets = print_report(results)
        print(f"\nran in {time.perf_counter() - started:.0f} s")
        write_json(
            RESULTS_DIR / "scale.json",
            {
                "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
                "machine": machine_context(workdir),
                "results": [
                    {
                        "backend": r.backend,
                        "vps": r.size.vps,
                        "snapshots": r.size.snapshots,
                        "populate_s": r.populate_s,
                        "reads_ms": r.reads,
                        "reconcile_s": r.reconcile,
                        "reconcile_findings": r.reconcile_findings,
                        "power_pass_s": [{"wall": w, "cpu": c} for w, c in r.power],
                        "sweep_s": r.sweep_s,
                        "sweep_jobs": r.sweep_jobs,
                        "sweep_reader_p99_ms": r.sweep_reader_p99_ms,
                        "sweep_reader_max_ms": r.sweep_reader_max_ms,
                        "sweep_statements": r.sweep_statements,
                        "startup": r.startup,
                    }
                    for r in results
                ],
                "targets": [{"description": d, "measured": m, "met": ok} for d, m, ok in targets],
            },
        )
    except BenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        if args.keep:
            progress(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
