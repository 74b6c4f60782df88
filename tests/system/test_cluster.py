"""The scale-out mode as real processes: one local cluster for the module (its own
PostgreSQL instance and redis-server, ``vpsnap migrate``, two ``vpsnap api`` behind nginx,
agents hv-1..3, two schedulers; vpsnap/localcluster.py, as ``scripts/cluster`` starts it), driven
through the load balancer with the SDK, and broken on purpose: kill -9 of an API, an agent
and the active scheduler, PostgreSQL restarted under it.

Every test leaves the cluster whole again (what it killed is restarted), and each works on
VPSes of its own, so they do not depend on each other's leftovers.
"""

from __future__ import annotations

import concurrent.futures
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path

import httpx
import pytest

from vpsnap.client import NO_RETRIES, Client, NodeUnavailable, RetryPolicy
from vpsnap.localcluster import ClusterPlan, LocalCluster

pytestmark = [pytest.mark.system, pytest.mark.postgres, pytest.mark.qemu, pytest.mark.slow]

OFFLINE_AFTER_S = 4.0
# Short everywhere a test would otherwise wait for a default: heartbeats and the offline
# threshold (the agent test), the retention sweep (the scheduler test), leases.
SETTINGS = {
    "VPSNAP_NODE_HEARTBEAT_SECONDS": "0.5",
    "VPSNAP_NODE_OFFLINE_AFTER_SECONDS": str(OFFLINE_AFTER_S),
    "VPSNAP_SCHEDULER_INTERVAL_SECONDS": "1",
    "VPSNAP_JOB_LEASE_SECONDS": "10",
    "VPSNAP_LOG_LEVEL": "info",
    # Every test's requests come from 127.0.0.1: the per-address budget is not under test.
    "VPSNAP_RATE_LIMIT_PER_IP": "100000/minute",
    "VPSNAP_RATE_LIMIT_PER_KEY": "100000/minute",
    "VPSNAP_RATE_LIMIT_SNAPSHOT_MUTATIONS_PER_VPS": "100000/minute",
}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    plan = ClusterPlan(
        root=tmp_path_factory.mktemp("cluster"),
        own_postgres=True,
        own_redis=True,
        settings=SETTINGS,
        disk_mib=64,
        data_mib=1,
    )
    started = LocalCluster(plan)
    started.start()
    try:
        yield started
    finally:
        started.stop()


@pytest.fixture(autouse=True)
def whole_again(cluster: LocalCluster) -> Iterator[None]:
    """What a test killed and did not restart (it failed half-way) is started again, so the
    next test finds the whole cluster."""
    yield
    cluster.heal()


def client(url: str, key: str, retry: RetryPolicy | None = None) -> Client:
    return Client(url, key, timeout=30, retry=retry)


def until(check: Callable[[], object], seconds: float, what: str) -> float:
    """Poll ``check`` until true; the seconds it took. Fails after ``seconds``."""
    started = time.monotonic()
    while not check():
        assert time.monotonic() - started < seconds, f"not within {seconds} s: {what}"
        time.sleep(0.05)
    return time.monotonic() - started


def disk_snapshots(disk: Path) -> list[str]:
    """The snapshot names qemu-img lists on the disk (``-U``: an agent may hold it)."""
    out = subprocess.run(
        ["qemu-img", "snapshot", "-l", "-U", str(disk)],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    ).stdout
    # ID TAG VM-SIZE DATE VM-CLOCK ICOUNT: the tag is the second column.
    return [line.split()[1] for line in out.splitlines()[2:] if line.split()]


def test_the_snapshot_workflow_through_the_balancer_on_three_nodes(cluster: LocalCluster) -> None:
    with client(cluster.url, cluster.keys["full"]) as sdk:
        nodes = {vps.name: vps.node for vps in sdk.vps.list()}
        assert {nodes[f"web-{n}"] for n in (1, 2, 3)} == {"hv-1", "hv-2", "hv-3"}
        for n in (1, 2, 3):
            vps, node = f"web-{n}", f"hv-{n}"
            disk = cluster.disk(node, vps)
            sdk.snapshots.create(vps, "before-upgrade").wait(timeout=30)
            sdk.snapshots.create(vps, "after-upgrade").wait(timeout=30)
            listed = sdk.snapshots.list(vps)
            assert [s.name for s in listed.snapshots] == ["before-upgrade", "after-upgrade"]
            assert all(s.status == "available" for s in listed.snapshots)
            assert disk_snapshots(disk) == ["before-upgrade", "after-upgrade"]

            restored = sdk.snapshots.restore(vps, "before-upgrade").wait(timeout=30)
            assert restored.status == "completed"
            sdk.snapshots.delete(vps, "after-upgrade").wait(timeout=30)
            sdk.snapshots.delete(vps, "before-upgrade").wait(timeout=30)
            assert sdk.snapshots.list(vps).snapshots == ()
            assert disk_snapshots(disk) == []
        # Which agent ran each job: the one of the VPS's node, never another.
        rows = cluster.query(
            "SELECT DISTINCT j.node, v.node AS vps_node FROM jobs j JOIN vps v ON v.id = j.vps_id"
        )
        assert all(row["node"] == row["vps_node"] for row in rows)


def test_a_long_poll_on_api_1_is_answered_when_another_nodes_agent_finishes(
    cluster: LocalCluster,
) -> None:
    api_1, api_2 = cluster.api_urls
    headers = {"Authorization": f"Bearer {cluster.keys['full']}"}
    agent = cluster.agent("hv-2")
    # The agent is paused while the job is queued, so the long-poll really waits for it.
    agent.signal(signal.SIGSTOP)
    try:
        with client(api_2, cluster.keys["full"]) as sdk:
            job_id = sdk.snapshots.create("db-2", "long-poll").job_id

        def long_poll() -> tuple[dict[str, object], float, str | None]:
            answer = httpx.get(
                f"{api_1}/api/jobs/{job_id}",
                headers={**headers, "Prefer": "wait=20"},
                timeout=30,
            )
            return answer.json(), time.monotonic(), answer.headers.get("Preference-Applied")

        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            waiting = pool.submit(long_poll)
            time.sleep(1.0)
            assert not waiting.done(), "the long-poll answered while the job could not move"
            resumed = time.monotonic()
            agent.signal(signal.SIGCONT)
            body, answered, applied = waiting.result(timeout=25)
    finally:
        agent.signal(signal.SIGCONT)
    assert applied == "wait=20"
    assert body["status"] in ("in_progress", "completed")
    # A NOTIFY from another process, not the 20 s timeout (nor a poll every few seconds).
    assert answered - resumed < 3.0, answered - resumed


def test_an_api_killed_with_a_create_in_flight_the_sdk_retry_lands_on_the_other(
    cluster: LocalCluster,
) -> None:
    api = cluster.members["api-1"]
    with client(cluster.url, cluster.keys["full"]) as sdk:
        # By id: a lookup by name would be one more request that api-1 could hold.
        vps_id = sdk.vps.get("web-1").id
    # api-1 is frozen: a request nginx hands it is received and never answered, i.e. in
    # flight, until the kill. Round robin hands it one of the first two requests.
    api.signal(signal.SIGSTOP)
    try:
        with (
            client(cluster.url, cluster.keys["full"]) as sdk,
            concurrent.futures.ThreadPoolExecutor(1) as pool,
        ):
            for attempt in range(4):
                name = f"inflight-{attempt}"
                creating = pool.submit(sdk.snapshots.create, vps_id, name)
                time.sleep(1.5)
                if not creating.done():
                    break  # held by the frozen api-1
                creating.result()  # api-2 took it: the next one goes to api-1
            else:
                pytest.fail("nginx never handed a create to api-1")
            api.kill()
            operation = creating.result(timeout=60)
            job = operation.wait(timeout=30)
    finally:
        api.signal(signal.SIGCONT)
        if not api.alive:
            cluster.restart("api-1")
    assert job.status == "completed"
    # nginx saw the POST die on api-1 after sending it (not a refused connection).
    port = cluster.api_ports[0]
    cut = [
        line
        for line in (cluster.plan.root / "nginx" / "error.log").read_text().splitlines()
        if f"POST /api/v2/vps/{vps_id}/snapshots" in line
        and f'upstream: "http://127.0.0.1:{port}/' in line
        and "while reading response header" in line
    ]
    assert cut, "the create was not in flight on api-1 when it was killed"
    on_disk = disk_snapshots(cluster.disk("hv-1", "web-1"))
    assert on_disk.count(name) == 1, on_disk
    rows = cluster.query(
        "SELECT count(*) AS n FROM jobs WHERE snapshot_name = $1 AND type = 'snapshot.create'",
        name,
    )
    assert rows[0]["n"] == 1
    with client(cluster.url, cluster.keys["full"]) as sdk:
        for snapshot in sdk.snapshots.list("web-1").snapshots:
            sdk.snapshots.delete("web-1", snapshot.name).wait(timeout=30)


def test_an_agent_killed_mid_job_its_node_goes_offline_and_the_job_runs_once(
    cluster: LocalCluster,
) -> None:
    # Six disks: each create runs qemu-img twice per disk, long enough to be caught running.
    vps_id = cluster.add_vps("hv-3", "kill-agent", disks=6, slots=10)
    agent = cluster.agent("hv-3")
    names = [f"k{n}" for n in range(6)]
    with client(cluster.url, cluster.keys["full"]) as sdk:
        # Something to restore on web-3, for the restore gate while hv-3 is offline.
        sdk.snapshots.create("web-3", "kept").wait(timeout=30)
        operations = [sdk.snapshots.create(vps_id, name) for name in names]

        def running() -> bool:
            rows = cluster.query(
                "SELECT 1 FROM jobs WHERE vps_id = $1 AND status = 'in_progress'", vps_id
            )
            return bool(rows)

        # Frozen first, then checked, then killed: the kill lands mid-job for sure (a job
        # that ended between the check and a plain kill would leave nothing running).
        for _ in range(len(names)):
            until(running, 30, "a create of kill-agent running")
            agent.signal(signal.SIGSTOP)
            interrupted = cluster.query(
                "SELECT id, snapshot_name FROM jobs WHERE vps_id = $1 AND status = 'in_progress'",
                vps_id,
            )
            if interrupted:
                break
            agent.signal(signal.SIGCONT)
        assert interrupted, "never caught a create running"
        agent.kill()
        killed_at = time.monotonic()

        # web-3's power state was published while hv-3 was alive ("stopped").
        assert sdk.vps.get("web-3").power_state != "unknown"

        def offline() -> bool:
            return sdk.vps.get("web-3").power_state == "unknown"

        until(offline, OFFLINE_AFTER_S + 10, "hv-3 offline")
        assert time.monotonic() - killed_at >= OFFLINE_AFTER_S - 1
        gates = sdk.snapshots.list("web-3").actions
        assert (gates.can_create.allowed, gates.can_create.code) == (False, "node_unavailable")
        assert (gates.can_restore.allowed, gates.can_restore.code) == (False, "node_unavailable")
        with client(cluster.url, cluster.keys["full"], NO_RETRIES) as once:
            with pytest.raises(NodeUnavailable) as refused:
                once.snapshots.create("web-3", "while-offline")
            assert refused.value.status == 503
            with pytest.raises(NodeUnavailable):
                once.snapshots.restore("web-3", "kept")
        # The other nodes are unaffected.
        assert sdk.vps.get("web-1").power_state != "unknown"
        sdk.snapshots.create("db-1", "while-hv-3-is-down").wait(timeout=30)
        sdk.snapshots.delete("db-1", "while-hv-3-is-down").wait(timeout=30)

        cluster.restart("agent-hv-3")
        for operation in operations:
            assert operation.wait(timeout=60).status == "completed"
        sdk.snapshots.delete("web-3", "kept").wait(timeout=30)
    for index in range(6):
        assert disk_snapshots(cluster.disk("hv-3", "kill-agent", index)) == names
    rows = cluster.query(
        "SELECT snapshot_name, status, attempts FROM jobs WHERE vps_id = $1 ORDER BY created_at",
        vps_id,
    )
    assert [(r["snapshot_name"], r["status"]) for r in rows] == [(n, "completed") for n in names]
    retried = {r["snapshot_name"]: r["attempts"] for r in rows}
    assert retried[interrupted[0]["snapshot_name"]] == 2  # claimed, killed, claimed again


def test_the_standby_scheduler_takes_over_within_10_s_and_nothing_expires_twice(
    cluster: LocalCluster,
) -> None:
    vps_id = cluster.add_vps("hv-2", "expiring", slots=10)
    names = [f"e{n}" for n in range(4)]
    with client(cluster.url, cluster.keys["full"]) as sdk:
        for operation in [sdk.snapshots.create(vps_id, name) for name in names]:
            operation.wait(timeout=30)
    active = cluster.active_scheduler()
    assert active is not None
    standby = next(
        m for n, m in cluster.members.items() if n.startswith("scheduler-") and m is not active
    )
    before = len(standby.log_events("scheduler_active"))
    # Expired now: the active one sweeps them within a second, or its successor does.
    cluster.query(
        "UPDATE snapshots SET expires_at = (now() AT TIME ZONE 'utc') - interval '1 minute' "
        "WHERE vps_id = $1",
        vps_id,
    )
    time.sleep(0.3)
    active.kill()
    killed = datetime.now().astimezone()
    until(
        lambda: len(standby.log_events("scheduler_active")) > before,
        15,
        "the standby scheduler active",
    )
    took_over = datetime.fromisoformat(standby.log_events("scheduler_active")[-1]["timestamp"])
    assert (took_over - killed).total_seconds() < 10

    def all_gone() -> bool:
        return not cluster.query("SELECT 1 FROM snapshots WHERE vps_id = $1", vps_id)

    until(all_gone, 30, "the expired snapshots removed")
    rows = cluster.query(
        "SELECT snapshot_name, count(*) AS n FROM jobs WHERE vps_id = $1 "
        "AND type = 'snapshot.expire' GROUP BY snapshot_name",
        vps_id,
    )
    assert {r["snapshot_name"]: r["n"] for r in rows} == dict.fromkeys(names, 1)
    assert disk_snapshots(cluster.disk("hv-2", "expiring")) == []
    cluster.restart(active.name)


def _advisory_locks(cluster: LocalCluster) -> int:
    rows = cluster.query(
        "SELECT count(*) AS n FROM pg_locks WHERE locktype = 'advisory' AND granted"
    )
    return int(rows[0]["n"])


def test_postgresql_restarted_under_the_cluster_every_process_reconnects(
    cluster: LocalCluster,
) -> None:
    postgres = cluster.postgres
    assert postgres is not None
    # Three node locks (one per agent) and the active scheduler's.
    until(lambda: _advisory_locks(cluster) == 4, 10, "4 advisory locks before")
    with client(cluster.url, cluster.keys["full"]) as sdk:
        sdk.snapshots.create("db-3", "before-restart").wait(timeout=30)
    postgres.stop()
    time.sleep(1.0)
    # While it is down: readiness says so, nothing answers 500 with a stack trace.
    answer = httpx.get(f"{cluster.api_urls[0]}/readyz", timeout=15)
    assert answer.status_code == 503
    assert answer.json()["checks"]["database"].startswith("unavailable")
    postgres.start()
    for url in cluster.api_urls:
        until(lambda url=url: httpx.get(f"{url}/readyz", timeout=5).status_code == 200, 30, url)
    until(lambda: _advisory_locks(cluster) == 4, 30, "every agent and a scheduler relocked")
    for name, member in cluster.members.items():
        assert member.alive or name == "migrate", f"{name} exited:\n{member.tail()}"
    with client(cluster.url, cluster.keys["full"]) as sdk:
        assert [s.name for s in sdk.snapshots.list("db-3").snapshots] == ["before-restart"]
        # Every node takes work again (its agent's LISTEN connection is back, too).
        started = time.monotonic()
        for n in (1, 2, 3):
            sdk.snapshots.create(f"db-{n}", "after-restart").wait(timeout=30)
        assert time.monotonic() - started < 30
        for n in (1, 2, 3):
            for snapshot in sdk.snapshots.list(f"db-{n}").snapshots:
                sdk.snapshots.delete(f"db-{n}", snapshot.name).wait(timeout=30)


def test_redis_down_limits_count_per_process_and_nothing_answers_500(
    cluster: LocalCluster,
) -> None:
    """docs/scale-out.md, "When Redis is down": the API goes on answering (rate limits counted
    in each process meanwhile), /readyz says ``degraded`` with 200, and the shared counters
    are used again once Redis is back."""
    redis = cluster.redis
    assert redis is not None
    assert cluster.rate_limit_storage.startswith("async+redis://"), cluster.rate_limit_storage
    for url in cluster.api_urls:
        assert httpx.get(f"{url}/readyz", timeout=10).json()["checks"]["rate_limits"] == "ok"
    redis.stop()
    try:
        with client(cluster.url, cluster.keys["full"], NO_RETRIES) as sdk:
            # Several requests per API process: the first finds Redis gone, the next ones
            # count in memory.
            for _ in range(6):
                assert sdk.vps.get("web-2").node == "hv-2"
            sdk.snapshots.create("web-2", "redis-down").wait(timeout=30)
            sdk.snapshots.delete("web-2", "redis-down").wait(timeout=30)
        for url in cluster.api_urls:
            answer = httpx.get(f"{url}/readyz", timeout=10)
            assert answer.status_code == 200
            body = answer.json()
            assert body["status"] == "degraded"
            assert body["checks"]["rate_limits"].startswith("unavailable")
            assert body["checks"]["database"] == "ok"
        logged = [m for n, m in cluster.members.items() if n.startswith("api-")]
        assert any(m.log_events("rate_limit_storage_unavailable") for m in logged)
        answered_500 = [
            line for m in logged for line in m.log_text().splitlines() if '"status": 500' in line
        ]
        assert not answered_500, answered_500
    finally:
        redis.start()
    for url in cluster.api_urls:
        until(
            lambda url=url: httpx.get(f"{url}/readyz", timeout=10).json()["status"] == "ok",
            20,
            f"{url} back on Redis",
        )
