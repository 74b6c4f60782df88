"""Errors rebuilt from the server's problem documents: class, status, code, details, request id."""

from __future__ import annotations

import pytest

from tests.live_server import LiveServer
from vpsnap.client import (
    BillingUnavailable,
    Client,
    Conflict,
    Forbidden,
    InvalidRequest,
    JobNotFound,
    NotFound,
    ServerError,
    SnapshotBusy,
    SnapshotLimitReached,
    SnapshotNameTaken,
    SnapshotNotFound,
    SnapshotSlotsInUse,
    Unauthorized,
    VpsnapError,
    VpsNotFound,
)
from vpsnap.client.errors import error_from_problem

pytestmark = [pytest.mark.slow, pytest.mark.qemu]

UNKNOWN_VPS = "vps_" + "0" * 26


def assert_from_server(error: VpsnapError, status: int, code: str) -> None:
    assert (error.status, error.code) == (status, code)
    assert error.request_id is not None
    assert error.request_id.startswith("req_")
    assert error.title
    assert error.problem["requestId"] == error.request_id


def test_missing_things_are_not_found(client: Client, server: LiveServer) -> None:
    with pytest.raises(VpsNotFound) as vps:
        client.snapshots.list(UNKNOWN_VPS)
    assert_from_server(vps.value, 404, "vps_not_found")
    with pytest.raises(SnapshotNotFound) as snapshot:
        client.snapshots.delete("demo-web", "no-such-snapshot")
    assert_from_server(snapshot.value, 404, "snapshot_not_found")
    with pytest.raises(JobNotFound) as job:
        client.jobs.get("job_" + "0" * 26)
    assert_from_server(job.value, 404, "job_not_found")
    assert isinstance(job.value, NotFound)


def test_another_accounts_vps_is_not_found(client: Client, server: LiveServer) -> None:
    with Client(server.url, server.key("other")) as other:
        theirs = other.vps.get("other-web")
    with pytest.raises(VpsNotFound) as refused:
        client.snapshots.list(theirs.id)
    assert_from_server(refused.value, 404, "vps_not_found")
    with pytest.raises(VpsNotFound):
        client.vps.get("other-web")  # not in this account's inventory either


def test_a_missing_scope_is_forbidden_and_named(server: LiveServer) -> None:
    with Client(server.url, server.key("readonly")) as readonly:
        assert readonly.snapshots.list("demo-web").actions.can_create.code == "forbidden"
        with pytest.raises(Forbidden) as refused:
            readonly.snapshots.create("demo-web", "nope")
    assert_from_server(refused.value, 403, "forbidden")
    assert refused.value.required_scopes == ("backup:vm",)


def test_a_bad_key_is_unauthorized(server: LiveServer) -> None:
    with Client(server.url, "vpsnap_not-a-real-key") as stranger, pytest.raises(Unauthorized) as e:
        list(stranger.vps.list())
    assert_from_server(e.value, 401, "unauthorized")


def test_conflicts_have_their_own_classes(client: Client, server: LiveServer) -> None:
    vps = server.add_vps(1)
    client.snapshots.create(vps, "first").wait(timeout=30)
    with pytest.raises(SnapshotLimitReached) as full:
        client.snapshots.create(vps, "second")
    assert_from_server(full.value, 409, "snapshot_limit_reached")
    assert isinstance(full.value, Conflict)
    assert full.value.extensions["totalSnapshots"] == 1
    assert full.value.extensions["usedSnapshots"] == 1
    with pytest.raises(SnapshotNameTaken) as taken:
        client.snapshots.create(vps, "FIRST")
    assert_from_server(taken.value, 409, "snapshot_name_taken")
    with pytest.raises(SnapshotSlotsInUse) as in_use:
        client.vps.configure(vps, snapshot_slots=0)
    assert_from_server(in_use.value, 409, "snapshot_slots_in_use")
    assert in_use.value.extensions["snapshotsInUse"] == ["first"]

    busy_vps = server.add_vps(1)
    creating = client.snapshots.create(busy_vps, "slow-busy")
    with pytest.raises(SnapshotBusy) as busy:
        client.snapshots.delete(busy_vps, "slow-busy")
    assert_from_server(busy.value, 409, "snapshot_busy")
    creating.wait(timeout=30)


def test_an_invalid_request_lists_its_field_errors(client: Client) -> None:
    with pytest.raises(InvalidRequest) as invalid:
        client.snapshots.create("demo-web", "not a valid name!")
    assert_from_server(invalid.value, 400, "invalid_request")
    [field] = invalid.value.field_errors
    assert (field.pointer, field.code) == ("/name", "invalid_format")


@pytest.mark.parametrize(
    ("code", "status", "expected"),
    [
        ("brand_new_conflict", 409, Conflict),
        ("brand_new_missing", 404, NotFound),
        ("brand_new_outage", 503, ServerError),
        ("brand_new_teapot", 418, VpsnapError),
        ("brand_new_field", 400, InvalidRequest),
        ("billing_unavailable", 503, BillingUnavailable),
        ("snapshot_busy", 409, SnapshotBusy),
    ],
)
def test_codes_the_sdk_does_not_know_map_by_status(
    code: str, status: int, expected: type[VpsnapError]
) -> None:
    problem = {"code": code, "status": status, "title": "T", "detail": "D", "requestId": "req_x"}
    error = error_from_problem(problem, status=status, request_id=None)
    assert type(error) is expected
    assert (error.code, error.status, error.detail, error.request_id) == (
        code,
        status,
        "D",
        "req_x",
    )


def test_csrf_failed_is_rebuilt_as_a_forbidden_subclass() -> None:
    from vpsnap.client.errors import CsrfFailed, Forbidden, error_from_problem

    error = error_from_problem(
        {
            "code": "csrf_failed",
            "status": 403,
            "title": "Cross-site request refused",
            "detail": "x",
        },
        status=403,
        request_id="req_1",
    )
    assert type(error) is CsrfFailed
    assert isinstance(error, Forbidden)
