"""Lost answers and unreachable servers: retries that never make a second snapshot."""

from __future__ import annotations

import httpx
import pytest

from tests.client.support import DroppingProxy, Recording
from tests.live_server import LiveServer, free_port
from vpsnap.client import NO_RETRIES, Client, ConnectionFailed, RetryPolicy

pytestmark = [pytest.mark.slow, pytest.mark.qemu]

QUICK_RETRIES = RetryPolicy(backoff=0.05, max_backoff=0.2)


def test_a_lost_answer_is_retried_with_the_same_key_and_replayed(
    client: Client, server: LiveServer
) -> None:
    vps = server.add_vps(2)
    with (
        DroppingProxy(server.port, b"/snapshots") as proxy,
        Client(proxy.url, server.key(), retry=QUICK_RETRIES) as through_proxy,
    ):
        operation = through_proxy.snapshots.create(vps, "after-drop")
        job = operation.wait(timeout=30)
        keys = proxy.idempotency_keys()
    assert proxy.dropped == 1
    assert len(keys) == 2
    assert keys[0] == keys[1]  # the retry was the same request, under the same key
    assert operation.replayed  # ... so the server answered with the first attempt's job
    assert job.status == "completed"
    listing = client.snapshots.list(vps)
    assert [(s.name, s.status) for s in listing.snapshots] == [("after-drop", "available")]
    assert listing.limits.used_snapshots == 1


def test_create_safely_survives_lost_answers_without_a_duplicate(
    client: Client, server: LiveServer
) -> None:
    vps = server.add_vps(1)
    client.snapshots.create_safely(vps, "old")
    # Lose the answer to the deletion that makes room, then to the create.
    for method, lost, name in ((b"DELETE", b"/snapshots/old", "new"), (b"POST", b"", "newer")):
        with (
            DroppingProxy(server.port, lost, method) as proxy,
            Client(proxy.url, server.key(), retry=QUICK_RETRIES) as through_proxy,
        ):
            snapshot = through_proxy.snapshots.create_safely(vps, name, make_room="delete-oldest")
            keys = proxy.idempotency_keys()
        assert proxy.dropped == 1
        assert keys == [keys[0], keys[0]]
        assert snapshot.status == "available"
        listing = client.snapshots.list(vps)
        assert [s.name for s in listing.snapshots] == [name]
        assert listing.limits.used_snapshots == 1


def test_without_retries_a_lost_answer_is_a_connection_failure(
    client: Client, server: LiveServer
) -> None:
    vps = server.add_vps(2)
    with (
        DroppingProxy(server.port, b"/snapshots") as proxy,
        Client(proxy.url, server.key(), retry=NO_RETRIES) as through_proxy,
        pytest.raises(ConnectionFailed) as lost,
    ):
        through_proxy.snapshots.create(vps, "lost")
    assert isinstance(lost.value.__cause__, httpx.RemoteProtocolError)
    assert "1 attempt(s)" in str(lost.value)
    # The server did the work: exactly why every retry must carry the same key.
    assert [s.name for s in client.snapshots.list(vps).snapshots] == ["lost"]


def test_an_unreachable_server_is_retried_then_reported() -> None:
    recording = Recording()
    url = f"http://127.0.0.1:{free_port()}"
    policy = RetryPolicy(attempts=3, backoff=0.01, max_backoff=0.02)
    with (
        Client(url, "vpsnap_key", retry=policy, transport=recording) as client,
        pytest.raises(ConnectionFailed) as unreachable,
    ):
        list(client.vps.list())
    assert "3 attempt(s)" in str(unreachable.value)
    assert recording.attempts == 3
    assert isinstance(unreachable.value.__cause__, httpx.ConnectError)
    assert unreachable.value.status is None
