"""Every operation of the API has an SDK method and a CLI command (parity with the real app's
/openapi.json), and the methods added for it work against a real server: lazy pages, jobs
list, schedules, power actions on a real VM, the server's version, and keys or URLs that
cannot be sent."""

from __future__ import annotations

import asyncio
import shutil

import click
import httpx
import pytest

from tests.client.support import Recording
from tests.live_server import LiveServer
from vpsnap.cli.entry import cli
from vpsnap.client import (
    AsyncClient,
    Client,
    ConfigurationError,
    InvalidRequest,
    SnapshotsNotIncluded,
    VpsNotFound,
)

pytestmark = [pytest.mark.slow, pytest.mark.qemu]

# operationId → the SDK method (on Client and AsyncClient) and the CLI command that call it.
OPERATIONS: dict[str, tuple[str, str]] = {
    "listVps": ("vps.list", "vps list"),
    "getVps": ("vps.get", "vps get"),
    "startVps": ("vps.start", "vps start"),
    "shutdownVps": ("vps.shutdown", "vps shutdown"),
    "stopVps": ("vps.stop", "vps stop"),
    "restartVps": ("vps.restart", "vps restart"),
    "resetVps": ("vps.reset", "vps reset"),
    "getUpgradeOptions": ("vps.upgrade_options", "vps upgrade-options"),
    "configureVps": ("vps.configure", "vps configure"),
    "listSnapshots": ("snapshots.list", "snapshots list"),
    "createSnapshot": ("snapshots.create", "snapshots create"),
    "deleteSnapshot": ("snapshots.delete", "snapshots delete"),
    "restoreSnapshot": ("snapshots.restore", "snapshots restore"),
    "getSnapshotSchedule": ("schedules.get", "schedules get"),
    "putSnapshotSchedule": ("schedules.set", "schedules set"),
    "deleteSnapshotSchedule": ("schedules.delete", "schedules delete"),
    "listJobs": ("jobs.list", "jobs list"),
    "getJob": ("jobs.get", "jobs get"),
    "getVersion": ("server_version", "version"),
    "listAuditEvents": ("audit.list", "audit list"),
    "listWebhooks": ("webhooks.list", "webhooks list"),
    "createWebhook": ("webhooks.create", "webhooks create"),
    "getWebhook": ("webhooks.get", "webhooks get"),
    "deleteWebhook": ("webhooks.delete", "webhooks delete"),
    "testWebhook": ("webhooks.test", "webhooks test"),
    "listWebhookDeliveries": ("webhooks.deliveries", "webhooks deliveries"),
}
# Service endpoints for monitoring and people, not for API clients.
NOT_FOR_CLIENTS = {"healthz", "readyz", "metrics", "listErrorCodes", "describeErrorCode"}


def operation_ids(server: LiveServer) -> set[str]:
    document = httpx.get(f"{server.url}/openapi.json", timeout=10).json()
    return {
        operation["operationId"]
        for path in document["paths"].values()
        for operation in path.values()
        if isinstance(operation, dict) and "operationId" in operation
    }


def resolve(root: object, dotted: str) -> object:
    for part in dotted.split("."):
        root = getattr(root, part)
    return root


def test_every_operation_has_an_sdk_method_and_a_cli_command(server: LiveServer) -> None:
    ids = operation_ids(server)
    missing = sorted(ids - set(OPERATIONS) - NOT_FOR_CLIENTS)
    assert missing == [], (
        f"operations without an SDK method (add them, then to OPERATIONS): {missing}"
    )
    assert set(OPERATIONS) <= ids, "OPERATIONS names an operation the API does not have"

    async def check_async() -> None:
        async with AsyncClient(server.url, server.key()) as client:
            for method, _ in OPERATIONS.values():
                assert callable(resolve(client, method)), method

    with Client(server.url, server.key()) as client:
        for method, _ in OPERATIONS.values():
            assert callable(resolve(client, method)), method
    asyncio.run(check_async())

    ctx = click.Context(cli)
    for _, command in OPERATIONS.values():
        found: click.Command | None = cli
        for word in command.split():
            assert isinstance(found, click.Group), command
            found = found.get_command(ctx, word)
            assert found is not None, f"no CLI command {command!r}"


def test_lists_are_lazy_iterators_over_pages(server: LiveServer) -> None:
    recording = Recording()
    with Client(server.url, server.key(), transport=recording) as client:
        pager = client.vps.list(limit=1)
        assert recording.attempts == 0  # nothing is sent until it is iterated
        first = next(iter(pager))
        assert recording.attempts == 1
        everything = list(pager)
        assert everything[0] == first
        assert len(everything) >= 3
        # One request per page of one, the first iteration's included.
        assert recording.attempts == 1 + len(everything)
        assert [v.name for v in client.vps.list(limit=100)] == [v.name for v in everything]
        page = client.vps.list(limit=2).page()
        assert len(page.items) == 2
        assert page.has_more
        rest = client.vps.list(limit=2).page(page.next_cursor)
        assert [v.id for v in rest.items] == [v.id for v in everything[2:4]]
        with pytest.raises(ValueError, match="page size"):
            client.vps.list(limit=500)


def test_jobs_list_newest_first_by_vps_and_status(server: LiveServer) -> None:
    name = server.add_vps(3)
    with Client(server.url, server.key()) as client:
        vps = client.vps.get(name)
        made = [client.snapshots.create(vps, f"s{i}").wait(timeout=60) for i in range(3)]
        jobs = list(client.jobs.list(vps_id=vps.id, limit=2))
        assert [j.job_id for j in jobs] == [j.job_id for j in reversed(made)]
        pages = list(client.jobs.list(vps_id=vps.id, limit=2).pages())
        assert [len(p.items) for p in pages] == [2, 1]
        assert list(client.jobs.list(vps_id=vps.id, status="failed")) == []
        completed = list(client.jobs.list(vps_id=vps.id, status="completed"))
        assert len(completed) == 3
        with pytest.raises(InvalidRequest) as bad:
            client.jobs.list(cursor="not-a-cursor").page()
        assert bad.value.code == "invalid_cursor"
        with pytest.raises(VpsNotFound):
            list(client.jobs.list(vps_id="vps_" + "0" * 26))

    async def newest() -> list[str]:
        async with AsyncClient(server.url, server.key()) as client:
            return [j.job_id async for j in client.jobs.list(vps_id=vps.id, limit=1)]

    assert asyncio.run(newest()) == [j.job_id for j in reversed(made)]


def test_schedules_get_set_delete(server: LiveServer) -> None:
    name = server.add_vps(2)
    with Client(server.url, server.key()) as client:
        assert client.schedules.get(name).schedule is None
        state = client.schedules.set(name, interval_hours=6.9)
        assert state.schedule is not None
        assert (state.schedule.enabled, state.schedule.interval_hours) == (True, 6)
        assert state.schedule.next_run_at is not None
        off = client.schedules.set(name, interval_hours=30, enabled=False)
        assert off.schedule is not None
        assert (off.schedule.enabled, off.schedule.interval_hours) == (False, 24)
        client.schedules.delete(name)
        assert client.schedules.get(name).schedule is None
        client.schedules.delete(name)  # also when there is none
        with pytest.raises(SnapshotsNotIncluded):
            client.schedules.set("demo-nosnap", interval_hours=6)
        assert not client.schedules.get("demo-nosnap").can_enable.allowed


@pytest.mark.skipif(
    shutil.which("qemu-system-x86_64") is None, reason="qemu-system-x86_64 is not installed"
)
def test_power_actions_on_a_real_vm(server: LiveServer) -> None:
    name = server.add_vps(1, vm_memory_mib=64)
    with Client(server.url, server.key()) as client:
        try:
            started = client.vps.start(name).wait(timeout=60)
            assert started.result is not None
            assert started.result["powerStateAfter"] == "running"
            assert client.vps.get(name).power_state == "running"
            reset = client.vps.reset(name).wait(timeout=60)
            assert reset.result is not None
            assert reset.result["powerStateAfter"] == "running"
            restarted = client.vps.restart(name, force=True).wait(timeout=60)
            assert restarted.result is not None
            assert restarted.result["powerStateAfter"] == "running"
        finally:
            stopped = client.vps.stop(name).wait(timeout=60)
        assert stopped.result is not None
        assert stopped.result["powerStateAfter"] == "stopped"
        kinds = [j.type for j in client.jobs.list(vps_id=client.vps.get(name).id)]
        assert kinds[0] == "vps.power"


def test_the_server_version(server: LiveServer) -> None:
    from vpsnap import __version__

    with Client(server.url, "vpsnap_any-key-will-do") as client:
        version = client.server_version()
    assert (version.name, version.version, version.api_versions) == ("vpsnap", __version__, ("v2",))


@pytest.mark.parametrize(
    ("url", "key", "said"),
    [
        ("http://127.0.0.1:8080", "vpsnap_clé", "cannot be sent in an HTTP header"),
        ("http://127.0.0.1:8080", "vpsnap_a\nb", "cannot be sent in an HTTP header"),
        ("http://127.0.0.1:8080", "vpsnap_a b", "cannot be sent in an HTTP header"),
        ("http://127.0.0.1:99999", "vpsnap_k", "invalid port"),
        ("http://[::1", "vpsnap_k", "cannot be used"),
        ("http://exa mple.com", "vpsnap_k", "no valid host"),
        ("ftp://example.com", "vpsnap_k", "must start with http"),
        ("http://127.0.0.1:8080?x=1", "vpsnap_k", "query"),
    ],
)
def test_a_key_or_url_that_cannot_be_sent_is_a_configuration_error(
    url: str, key: str, said: str
) -> None:
    # Before: httpx raised UnicodeEncodeError for the non-ASCII key, at the first request.
    with pytest.raises(ConfigurationError, match=said) as raised:
        Client(url, key)
    assert key not in str(raised.value)  # the key is never echoed
    with pytest.raises(ConfigurationError):
        AsyncClient(url, key)


def test_non_ascii_host_names_are_sent_as_idna(server: LiveServer) -> None:
    # Not an error: httpx encodes an internationalised host name (the request then fails to
    # connect, as any unknown host does, after the retries).
    from vpsnap.client import NO_RETRIES, ConnectionFailed

    with (
        Client("http://bücher.invalid:1", "vpsnap_k", retry=NO_RETRIES, timeout=2) as client,
        pytest.raises(ConnectionFailed),
    ):
        client.server_version()
