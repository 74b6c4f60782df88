"""429 handling against a server of its own with tiny limits: 4 requests per second per key,
and 1 snapshot change per hour per VPS."""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator

import pytest
from click.testing import CliRunner

from tests.client.support import Recording
from tests.live_server import LiveServer
from vpsnap.cli.entry import cli as app
from vpsnap.client import Client, RateLimited, RetryPolicy

pytestmark = [pytest.mark.slow, pytest.mark.qemu]


@pytest.fixture(scope="module")
def limited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    live = LiveServer(
        tmp_path_factory.mktemp("rate-limited-server"),
        VPSNAP_RATE_LIMIT_PER_KEY="4/second",
        VPSNAP_RATE_LIMIT_SNAPSHOT_MUTATIONS_PER_VPS="1/hour",
    )
    yield live
    live.stop()


def test_a_429_is_waited_out_for_retry_after_and_retried(limited: LiveServer) -> None:
    recording = Recording()
    with Client(limited.url, limited.key(), transport=recording) as client:
        for _ in range(10):
            assert len(list(client.vps.list())) == 3
    statuses = [e.response.status_code for e in recording.exchanges]
    assert statuses.count(200) == 10
    assert 429 in statuses
    for limited_at, retried in itertools.pairwise(recording.exchanges):
        if limited_at.response.status_code == 429:
            retry_after = int(limited_at.response.headers["Retry-After"])
            assert retry_after >= 1
            assert retried.sent_at - limited_at.answered_at >= retry_after - 0.05


def test_rate_limited_is_raised_once_the_retries_are_spent(limited: LiveServer) -> None:
    policy = RetryPolicy(rate_limit_retries=0)
    with (
        Client(limited.url, limited.key(), retry=policy) as client,
        pytest.raises(RateLimited) as refused,
    ):
        for _ in range(20):  # the fifth request of a second is over the limit
            list(client.vps.list())
    error = refused.value
    assert (error.status, error.code) == (429, "rate_limited")
    assert error.retry_after is not None
    assert error.retry_after >= 1
    assert error.request_id is not None


def test_a_retry_after_longer_than_the_budget_is_not_waited(limited: LiveServer) -> None:
    with Client(limited.url, limited.key()) as client:
        client.snapshots.create("demo-web", "one").wait(timeout=30)
        started = time.monotonic()
        with pytest.raises(RateLimited) as refused:
            client.snapshots.create("demo-web", "two")
    assert time.monotonic() - started < 10  # an hour's Retry-After raises at once
    assert refused.value.retry_after is not None
    assert refused.value.retry_after > RetryPolicy().max_rate_limit_wait


def test_the_cli_exits_6_when_rate_limited(limited: LiveServer) -> None:
    def create(name: str) -> tuple[int, str]:
        args = ["snapshots", "create", "demo-db", name, "--make-room", "delete-oldest", "--yes"]
        args += ["--url", limited.url]
        result = CliRunner().invoke(app, [*args, "--api-key", limited.key()])
        return result.exit_code, result.stderr

    assert create("first")[0] == 0
    code, stderr = create("second")  # the deletion that makes room is the second change
    assert code == 6, stderr
    assert "[rate_limited]" in stderr
    assert "request id: req_" in stderr
