"""Prometheus metrics of one vpsnap process (served at ``GET /metrics``).

Counters and histograms are updated where things happen (edge middleware, worker,
reconciliation); gauges of queue depth and snapshots by status are read from the database at
scrape time, so every process of a scale-out deployment reports the same truth.
"""

from __future__ import annotations

import platform
from datetime import UTC, datetime

from prometheus_client import (
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

from vpsnap import __version__
from vpsnap.domain.model import JobStatus, SnapshotStatus
from vpsnap.domain.ports import Store
from vpsnap.domain.webhooks import MessageState

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


# -- operations (issue 12) -----------------------------------------------------------------------
JOB_FAILURES = Counter(
    "vpsnap_job_failures",
    "Jobs that ended failed, by type and problem code.",
    ["type", "code"],
    registry=REGISTRY,
)
WEBHOOK_DELIVERIES = Counter(
    "vpsnap_webhook_deliveries",
    "Webhook delivery attempts by outcome (delivered, failed) and event type.",
    ["outcome", "event_type"],
    registry=REGISTRY,
)
WEBHOOK_MESSAGES = Gauge(
    "vpsnap_webhook_messages",
    "Webhook messages in the outbox by state (read from the database).",
    ["state"],
    registry=REGISTRY,
)
RATE_LIMITED = Counter(
    "vpsnap_rate_limited_requests",
    "Requests refused with 429, by the limit that refused them.",
    ["policy"],
    registry=REGISTRY,
)
RATE_LIMIT_STORAGE_ERRORS = Counter(
    "vpsnap_rate_limit_storage_errors",
    "Calls on the shared rate-limit storage (Redis) that failed or timed out; each one was "
    "counted in this process's memory instead (docs/scale-out.md).",
    registry=REGISTRY,
)
BUILD_INFO = Gauge(
    "vpsnap_build_info",
    "Always 1; the labels say which vpsnap and Python this process runs.",
    ["version", "python"],
    registry=REGISTRY,
)
BUILD_INFO.labels(__version__, platform.python_version()).set(1)
DATA_STORE_FREE = Gauge(
    "vpsnap_data_store_free_bytes",
    "Free bytes of a filesystem holding VPS disks, as its node last published them.",
    ["node", "store"],
    registry=REGISTRY,
)
DATA_STORE_TOTAL = Gauge(
    "vpsnap_data_store_total_bytes",
    "Size of a filesystem holding VPS disks, as its node last published it.",
    ["node", "store"],
    registry=REGISTRY,
)
DATA_STORE_AGE = Gauge(
    "vpsnap_data_store_observed_age_seconds",
    "Seconds since the node last published the free space of this store.",
    ["node", "store"],
    registry=REGISTRY,
)
VPS_ALLOCATED = Gauge(
    "vpsnap_vps_allocated_bytes",
    "Bytes a VPS's disk images take on disk, snapshots and saved RAM state included.",
    ["vps", "node"],
    registry=REGISTRY,
)
# What Prometheus' default registry would have: CPU, memory, open files, start time
# (process_*), and the Python runtime (python_info).
REGISTRY.register(PROCESS_COLLECTOR)
REGISTRY.register(PLATFORM_COLLECTOR)


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
        for state in MessageState:
            WEBHOOK_MESSAGES.labels(state.value).set(await tx.count_webhook_messages(state))
        data_stores = await tx.list_data_stores(None)
        allocations = await tx.list_vps_storage(None)
    for node in nodes:
        NODE_LAST_SEEN.labels(node.name).set((now - node.last_seen_at).total_seconds())
        NODE_DRAINED.labels(node.name).set(1 if node.drained else 0)
    for name in {n.name for n in nodes} | set(stats):
        waiting = stats.get(name)
        oldest = waiting.oldest_queued_at if waiting is not None else None
        NODE_QUEUED.labels(name).set(waiting.queued_jobs if waiting is not None else 0)
        NODE_OLDEST_QUEUED.labels(name).set((now - oldest).total_seconds() if oldest else 0)
    # Series of stores and VPSes that are gone must disappear, not keep their last value.
    for gauge in (DATA_STORE_FREE, DATA_STORE_TOTAL, DATA_STORE_AGE, VPS_ALLOCATED):
        gauge.clear()
    for data_store in data_stores:
        labels = (data_store.node, data_store.path)
        DATA_STORE_FREE.labels(*labels).set(data_store.free_bytes)
        DATA_STORE_TOTAL.labels(*labels).set(data_store.total_bytes)
        DATA_STORE_AGE.labels(*labels).set((now - data_store.observed_at).total_seconds())
    for usage in allocations:
        VPS_ALLOCATED.labels(usage.vps_id, usage.node).set(usage.allocated_bytes)
    return generate_latest(REGISTRY)
