"""Prometheus metrics of one vpsnap process (served at ``GET /metrics``).

Counters and histograms are updated where things happen (edge middleware, worker,
reconciliation); gauges of queue depth and snapshots by status are read from the database at
scrape time, so every process of a scale-out deployment reports the same truth.
"""

from __future__ import annotations

from datetime import UTC, datetime

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from vpsnap.domain.model import JobStatus, SnapshotStatus
from vpsnap.domain.ports import Store

REGISTRY = CollectorRegistry(auto_describe=True)

REQUEST_DURATION = Histogram(
    "vpsnap_http_request_duration_seconds",
    "HTTP request latency by route template, method and status.",
    ["route", "method", "status"],
    registry=REGISTRY,
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
JOB_DURATION = Histogram(
    "vpsnap_job_duration_seconds",
    "Time from a job's claim to its end, by type and outcome.",
    ["type", "outcome"],
    registry=REGISTRY,
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
)
QUEUE_DEPTH = Gauge(
    "vpsnap_jobs", "Jobs by status (read from the database).", ["status"], registry=REGISTRY
)
SNAPSHOTS = Gauge(
    "vpsnap_snapshots",
    "Snapshots by status (read from the database).",
    ["status"],
    registry=REGISTRY,
)
NODE_LAST_SEEN = Gauge(
    "vpsnap_node_last_seen_seconds",
    "Seconds since each node's agent last reported (read from the database).",
    ["node"],
    registry=REGISTRY,
)
NODE_DRAINED = Gauge(
    "vpsnap_node_drained",
    "1 when the node is drained (takes no new work), else 0.",
    ["node"],
    registry=REGISTRY,
)
NODE_QUEUED = Gauge(
    "vpsnap_jobs_queued",
    "Jobs waiting to start (queued or pending), by node.",
    ["node"],
    registry=REGISTRY,
)
NODE_OLDEST_QUEUED = Gauge(
    "vpsnap_job_oldest_queued_seconds",
    "Age of the oldest job waiting to start, by node (0 when none waits).",
    ["node"],
    registry=REGISTRY,
)
RECONCILIATION_ACTIONS = Counter(
    "vpsnap_reconciliation_actions",
    "What reconciliation found and did, by action.",
    ["action"],
    registry=REGISTRY,
)


async def render(store: Store, now: datetime | None = None) -> bytes:
    """The exposition text, with the database gauges refreshed first."""
    now = now or datetime.now(UTC)
    async with store.transaction(read_only=True) as tx:
        for job_status in JobStatus:
            QUEUE_DEPTH.labels(job_status.value).set(await tx.count_jobs(job_status))
        for snapshot_status in SnapshotStatus:
            SNAPSHOTS.labels(snapshot_status.value).set(await tx.count_snapshots(snapshot_status))
        nodes = await tx.list_nodes()
        stats = await tx.node_stats()
    for node in nodes:
        NODE_LAST_SEEN.labels(node.name).set((now - node.last_seen_at).total_seconds())
        NODE_DRAINED.labels(node.name).set(1 if node.drained else 0)
    for name in {n.name for n in nodes} | set(stats):
        waiting = stats.get(name)
        oldest = waiting.oldest_queued_at if waiting is not None else None
        NODE_QUEUED.labels(name).set(waiting.queued_jobs if waiting is not None else 0)
        NODE_OLDEST_QUEUED.labels(name).set((now - oldest).total_seconds() if oldest else 0)
    return generate_latest(REGISTRY)
