"""Prometheus metrics of one vpsnap process (served at ``GET /metrics``).

Counters and histograms are updated where things happen (edge middleware, worker,
reconciliation); gauges of queue depth and snapshots by status are read from the database at
scrape time, so every process of a scale-out deployment reports the same truth.
"""

from __future__ import annotations

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
RECONCILIATION_ACTIONS = Counter(
    "vpsnap_reconciliation_actions",
    "What reconciliation found and did, by action.",
    ["action"],
    registry=REGISTRY,
)


async def render(store: Store) -> bytes:
    """The exposition text, with the database gauges refreshed first."""
    async with store.transaction(read_only=True) as tx:
        for job_status in JobStatus:
            QUEUE_DEPTH.labels(job_status.value).set(await tx.count_jobs(job_status))
        for snapshot_status in SnapshotStatus:
            SNAPSHOTS.labels(snapshot_status.value).set(await tx.count_snapshots(snapshot_status))
    return generate_latest(REGISTRY)
