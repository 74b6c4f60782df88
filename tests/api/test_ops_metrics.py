"""What /metrics says about operations: job failures by code, webhook deliveries by outcome,
the outbox, rate-limit rejections, build info and the process and platform collectors."""

from __future__ import annotations

import re

import pytest

from tests.conftest import Api
from tests.webhook_receiver import running_receiver

pytestmark = pytest.mark.qemu


@pytest.fixture
def api_overrides() -> dict[str, object]:
    return {
        "rate_limit_snapshot_mutations_per_vps": "2/minute",
        "webhook_allowed_networks": ["127.0.0.1/32"],
        "webhook_retry_base_seconds": 60.0,
    }


@pytest.fixture
def api_worker() -> bool:
    return False


def value(text: str, series: str) -> float:
    """The sample of ``series`` (name with labels, as exposed), 0 when absent."""
    pattern = re.compile(rf"^{re.escape(series)} (\S+)$", re.MULTILINE)
    match = pattern.search(text)
    return float(match.group(1)) if match else 0.0


async def metrics(api: Api) -> str:
    response = await api.client.get("/metrics")
    assert response.status_code == 200
    return response.text


async def test_operations_series(api: Api) -> None:
    before = await metrics(api)
    vps_id = api.vps_ids["demo-web"]
    path = f"/api/v2/vps/{vps_id}/snapshots"

    # A job that fails with a code.
    await api.client.post(path, json={"name": "twice"}, headers=api.auth())
    assert await api.runtime.worker().run_one()
    async with api.runtime.store.transaction() as tx:
        await tx.remove_snapshot(vps_id, "twice")  # the row goes, the disk keeps it
    await api.client.post(path, json={"name": "twice"}, headers=api.auth())
    assert await api.runtime.worker().run_one()
    # The third mutation of this VPS within the minute is refused.
    limited = await api.client.post(path, json={"name": "third"}, headers=api.auth())
    assert limited.status_code == 429

    async with running_receiver(statuses=[500]) as receiver:
        created = await api.client.post(
            "/api/v2/webhooks", json={"url": receiver.url}, headers=api.auth()
        )
        hook = created.json()["id"]
        for _ in range(2):
            await api.client.post(f"/api/v2/webhooks/{hook}/actions/test", headers=api.auth())
        await api.runtime.webhook_dispatcher().deliver_due()

    after = await metrics(api)
    failures = 'vpsnap_job_failures_total{code="snapshot_name_taken",type="snapshot.create"}'
    assert value(after, failures) - value(before, failures) == 1
    limited_series = 'vpsnap_rate_limited_requests_total{policy="per-vps-snapshot-mutations"}'
    assert value(after, limited_series) - value(before, limited_series) == 1
    delivered = 'vpsnap_webhook_deliveries_total{event_type="webhook.test",outcome="delivered"}'
    failed = 'vpsnap_webhook_deliveries_total{event_type="webhook.test",outcome="failed"}'
    assert value(after, delivered) - value(before, delivered) == 1
    assert value(after, failed) - value(before, failed) == 1
    assert value(after, 'vpsnap_webhook_messages{state="pending"}') == 1  # the 500 is retried
    assert value(after, 'vpsnap_webhook_messages{state="delivered"}') == 1
    assert re.search(r'^vpsnap_build_info\{python="[0-9.]+",version="[^"]+"\} 1\.0$', after, re.M)
    assert value(after, "process_resident_memory_bytes") > 0
    assert value(after, "process_open_fds") > 0
    assert "python_info{" in after
    assert after.count("# TYPE vpsnap_job_failures_total counter") == 1
