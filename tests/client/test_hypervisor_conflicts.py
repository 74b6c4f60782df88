"""Issue 9, kind 5: conditions retrying cannot change reach SDK users as Conflict subclasses,
and the SDK does not retry them (unlike 503 hypervisor_unavailable). Unit tests: no server."""

from __future__ import annotations

import httpx
import pytest

from tests.client.test_retry_rules import FAST, OPERATION, VPS, Script, problem
from vpsnap.client import (
    Client,
    Conflict,
    DiskUnusable,
    MemorySnapshotUnsupported,
    RestoreIncomplete,
    SnapshotAmbiguous,
    VmConfigChanged,
    VpsnapError,
)
from vpsnap.client.errors import error_from_problem

NEW_CODES = {
    "disk_unusable": DiskUnusable,
    "snapshot_ambiguous": SnapshotAmbiguous,
    "vm_config_changed": VmConfigChanged,
    "memory_snapshot_unsupported": MemorySnapshotUnsupported,
    "restore_incomplete": RestoreIncomplete,
}


@pytest.mark.parametrize(("code", "cls"), NEW_CODES.items())
def test_each_code_has_its_conflict_class(code: str, cls: type[VpsnapError]) -> None:
    error = error_from_problem(
        {"code": code, "status": 409, "detail": "d", "extensions": {"devices": ["data0"]}},
        status=409,
        request_id="req_1",
    )
    assert type(error) is cls
    assert isinstance(error, Conflict)
    assert error.code == code


def test_memory_snapshot_unsupported_names_the_devices() -> None:
    error = error_from_problem(
        {"code": "memory_snapshot_unsupported", "status": 409, "extensions": {"devices": ["d0"]}},
        status=409,
        request_id=None,
    )
    assert isinstance(error, MemorySnapshotUnsupported)
    assert error.devices == ("d0",)


@pytest.mark.parametrize("code", NEW_CODES)
def test_they_are_not_retried(code: str) -> None:
    script = Script(problem(409, code), httpx.Response(202, json=OPERATION))
    with (
        Client("http://vpsnap.test", "k", retry=FAST, transport=httpx.MockTransport(script)) as c,
        pytest.raises(NEW_CODES[code]),
    ):
        c.snapshots.restore(VPS, "a")
    assert len(script.requests) == 1
