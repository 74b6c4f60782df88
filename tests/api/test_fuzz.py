"""Property-based fuzzing of every operation in ``/openapi.json`` (schemathesis) against the real
app: valid and invalid paths, query parameters, headers and bodies never get a 5xx, every 4xx is
a problem document, and every answer conforms to the OpenAPI document.

The app, its async store and its worker live on the test's event loop; Hypothesis (sync) runs
in a worker thread and hands each request to that loop, so jobs keep running between examples.
"""

from __future__ import annotations

import asyncio
import re
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import Phase, given, settings
from hypothesis import strategies as st
from schemathesis import Case, GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    missing_required_header,
    negative_data_rejection,
    positive_data_acceptance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.conftest import Api
from vpsnap.events import addresses

# docs/api.md lists these; test_every_operation_is_fuzzed keeps the list complete.
OPERATION_IDS = [
    "listVps",
    "getVps",
    "listSnapshots",
    "createSnapshot",
    "deleteSnapshot",
    "restoreSnapshot",
    "getSnapshotSchedule",
    "putSnapshotSchedule",
    "deleteSnapshotSchedule",
    "getUpgradeOptions",
    "configureVps",
    "startVps",
    "shutdownVps",
    "stopVps",
    "restartVps",
    "resetVps",
    "getJob",
    "listJobs",
    "getVersion",
    "healthz",
    "readyz",
    "metrics",
    "listErrorCodes",
    "describeErrorCode",
    # operations (issue 12)
    "listAuditEvents",
    "listWebhooks",
    "createWebhook",
    "getWebhook",
    "deleteWebhook",
    "testWebhook",
    "listWebhookDeliveries",
]

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    negative_data_rejection,
    positive_data_acceptance,
    missing_required_header,
]

# Who sends the request: mostly the full demo key so deep paths are reached, sometimes a key
# without write scopes, another account's key, or nothing at all (auth paths are fuzzed too).
CREDENTIALS = ["full", "full", "full", "readonly", "other", None]

# Operations whose only inputs are plain strings (path ids, the `Prefer` header) or nothing at
# all: every value is schema-valid, so there is no negative case to generate (their odd strings
# come from the positive cases).
NOTHING_TO_NEGATE = {
    "getVps",
    "listSnapshots",
    "deleteSnapshot",
    "restoreSnapshot",
    "getSnapshotSchedule",
    "deleteSnapshotSchedule",
    "getUpgradeOptions",
    "getJob",
    "describeErrorCode",
    "getVersion",
    "healthz",
    "readyz",
    "metrics",
    "listErrorCodes",
    "listWebhooks",
    "getWebhook",
    "deleteWebhook",
    "testWebhook",
}
CASES = [
    (operation_id, mode)
    for operation_id in OPERATION_IDS
    for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
    if mode is GenerationMode.POSITIVE or operation_id not in NOTHING_TO_NEGATE
]

# Field error codes of configureVps rules that depend on configuration, not on the schema.
BUSINESS_RULE_CODES = {"out_of_range", "not_allowed"}

PROBLEM_MEMBERS = {"type", "title", "status", "code", "requestId"}


@pytest.fixture(autouse=True)
def no_name_lookups(monkeypatch: pytest.MonkeyPatch) -> None:
    """Generated webhook URLs name random hosts: answer them here instead of asking DNS."""

    async def unknown(host: str, port: int) -> list[Any]:
        raise socket.gaierror(socket.EAI_NONAME, f"{host}:{port} is not looked up in tests")

    monkeypatch.setattr(addresses, "lookup", unknown)


@pytest.fixture
def database_url(tmp_path: Path) -> str:
    """SQLite only: the fuzzing exercises the HTTP layer, the store suites cover PostgreSQL."""
    return f"sqlite+aiosqlite:///{tmp_path / 'vpsnap.db'}"


def assert_problem_document(response: httpx.Response) -> None:
    assert response.status_code < 500, response.text
    if response.status_code < 400:
        return
    assert response.headers["content-type"] == "application/problem+json", response.text
    body = response.json()
    assert isinstance(body, dict), response.text
    assert set(body) >= PROBLEM_MEMBERS, body
    assert body["status"] == response.status_code, body
    assert body["requestId"] == response.headers["x-request-id"], body
    assert str(body["type"]).endswith(f"/errors/{body['code']}"), body


def _data_dependent_rejection(operation_id: str, response: httpx.Response) -> bool:
    """A documented 400 for a schema-valid request, decided by data the schema cannot carry."""
    if response.status_code != 400:
        return False
    body = response.json()
    if (
        operation_id in {"listVps", "listJobs", "listAuditEvents", "listWebhookDeliveries"}
        and body["code"] == "invalid_cursor"
    ):
        # `cursor` is opaque: any string is schema-valid, only those this server handed out are
        # accepted (docs/api.md, Pagination).
        return True
    # The slot range and step are the operator's configuration, the billing cycle the VPS's
    # (docs/capacity.md): `out_of_range` / `not_allowed`, never a schema rule.
    codes = {error["code"] for error in body.get("errors", [])}
    # A webhook URL that resolves to no public address, an event name that is no event, a
    # time range that ends before it starts (docs/webhooks.md, docs/api.md): data, not schema.
    return (
        operation_id in ("configureVps", "createWebhook", "listAuditEvents")
        and body["code"] == "invalid_request"
        and bool(codes)
        and codes <= BUSINESS_RULE_CODES
    )


def _request_kwargs(case: Case, credential: str | None, api: Api) -> dict[str, Any]:
    """The case as httpx keyword arguments (schemathesis serializes for `requests`)."""
    kwargs = case.as_transport_kwargs(base_url="http://testserver")
    headers = {str(k): str(v) for k, v in (kwargs.get("headers") or {}).items()}
    if credential is not None and not any(
        k.lower() in ("authorization", "x-api-key") for k in headers
    ):
        headers.update(api.auth(credential))
    out: dict[str, Any] = {
        "method": kwargs["method"],
        "url": kwargs["url"],
        "headers": headers,
        "params": kwargs.get("params"),
        "cookies": kwargs.get("cookies") or None,
    }
    if "json" in kwargs:
        out["json"] = kwargs["json"]
    elif kwargs.get("data") is not None:
        data = kwargs["data"]
        out["content"] = data.encode() if isinstance(data, str) else data
    return out


def _path_parameter_choices(api: Api, job_id: str) -> Iterator[dict[str, str] | None]:
    """Fixed path parameters some cases use, so the generated ones do not all miss (404)."""
    yield None  # everything generated
    for vps_id in api.vps_ids.values():
        yield {"vps_id": vps_id}
        yield {"vps_id": vps_id, "snapshot_id": "fuzz-snap"}
    yield {"job_id": job_id}
    yield {"code": "invalid_request"}


@pytest.mark.parametrize(("operation_id", "mode"), CASES, ids=[f"{o}-{m.value}" for o, m in CASES])
async def test_operation_survives_fuzzing(
    api: Api, operation_id: str, mode: GenerationMode
) -> None:
    # A snapshot and a job that exist, for the deep paths.
    vps_id = api.vps_ids["demo-web"]
    created = await api.client.post(
        f"/api/v2/vps/{vps_id}/snapshots", json={"name": "fuzz-snap"}, headers=api.auth()
    )
    assert created.status_code == 202, created.text
    job_id = created.json()["operation"]["jobId"]
    await api.wait_job(job_id)

    raw = (await api.client.get("/openapi.json")).json()
    schema = schemathesis.openapi.from_dict(raw)
    operation = schema.find_operation_by_id(operation_id)
    wanted = set(re.findall(r"{(\w+)}", operation.path))
    choices = [
        fixed
        for fixed in _path_parameter_choices(api, job_id)
        if fixed is None or set(fixed) <= wanted
    ]
    cases = st.sampled_from(choices).flatmap(
        lambda fixed: operation.as_strategy(generation_mode=mode, path_parameters=fixed)
    )
    loop = asyncio.get_running_loop()

    @settings(
        max_examples=25,
        derandomize=True,
        deadline=None,
        database=None,
        phases=[Phase.explicit, Phase.generate, Phase.shrink],
    )
    @given(case=cases, credential=st.sampled_from(CREDENTIALS))
    def fuzz(case: Case, credential: str | None) -> None:
        kwargs = _request_kwargs(case, credential, api)
        response = asyncio.run_coroutine_threadsafe(api.client.request(**kwargs), loop).result(
            timeout=60
        )
        assert_problem_document(response)
        excluded = (
            [positive_data_acceptance] if _data_dependent_rejection(operation_id, response) else []
        )
        case.validate_response(response, checks=CHECKS, excluded_checks=excluded)

    await asyncio.to_thread(fuzz)


async def test_every_operation_is_fuzzed(api: Api) -> None:
    raw = (await api.client.get("/openapi.json")).json()
    documented = {op["operationId"] for ops in raw["paths"].values() for op in ops.values()}
    assert documented == set(OPERATION_IDS)
