"""Authentication, scopes and the 401/403/404 semantics of contract section 2."""

from __future__ import annotations

from datetime import timedelta

import pytest

from tests.conftest import Api
from vpsnap.domain.auth import Scope


async def test_no_credentials_is_401(api: Api) -> None:
    response = await api.client.get("/api/v2/vps")
    assert response.status_code == 401
    assert response.json()["code"] == "unauthorized"
    assert response.headers["www-authenticate"] == 'Bearer realm="vpsnap"'  # RFC 9110 11.6.1


@pytest.mark.parametrize(
    "headers",
    [
        {"Authorization": "Bearer vpsnap_not-a-real-key"},
        {"Authorization": "Basic dXNlcjpwYXNz"},
        {"Authorization": "Bearer "},
        {"X-API-Key": "nope"},
    ],
)
async def test_invalid_credentials_are_401(api: Api, headers: dict[str, str]) -> None:
    response = await api.client.get("/api/v2/vps", headers=headers)
    assert response.status_code == 401
    assert response.json()["code"] == "unauthorized"
    assert response.headers["www-authenticate"] == 'Bearer realm="vpsnap"'


async def test_x_api_key_header_is_accepted(api: Api) -> None:
    response = await api.client.get("/api/v2/vps", headers={"X-API-Key": api.tokens["full"]})
    assert response.status_code == 200


async def test_revoked_and_expired_keys_are_401(api: Api) -> None:
    credentials = api.runtime.services.credentials
    issued = await credentials.issue("demo", frozenset({Scope.READ_VM}))
    headers = {"Authorization": f"Bearer {issued.secret}"}
    assert (await api.client.get("/api/v2/vps", headers=headers)).status_code == 200
    await credentials.revoke(issued.key.id)
    assert (await api.client.get("/api/v2/vps", headers=headers)).status_code == 401

    expired = await credentials.issue("demo", frozenset({Scope.READ_VM}), timedelta(seconds=-1))
    response = await api.client.get(
        "/api/v2/vps", headers={"Authorization": f"Bearer {expired.secret}"}
    )
    assert response.status_code == 401


async def test_missing_scope_is_403_naming_the_scope(api: Api) -> None:
    vps_id = api.vps_ids["demo-web"]
    response = await api.client.post(
        f"/api/v2/vps/{vps_id}/snapshots", json={"name": "x"}, headers=api.auth("readonly")
    )
    assert response.status_code == 403
    body = response.json()
    assert body["code"] == "forbidden"
    assert "backup:vm" in body["detail"]
    assert body["extensions"] == {"requiredScopes": ["backup:vm"]}
    for method, path in (
        ("DELETE", f"/api/v2/vps/{vps_id}/snapshots/x"),
        ("POST", f"/api/v2/vps/{vps_id}/snapshots/x/actions/restore"),
    ):
        denied = await api.client.request(method, path, headers=api.auth("readonly"))
        assert denied.status_code == 403, (method, path)


async def test_backup_scope_without_read_cannot_list(api: Api) -> None:
    issued = await api.runtime.services.credentials.issue("demo", frozenset({Scope.BACKUP_VM}))
    headers = {"Authorization": f"Bearer {issued.secret}"}
    vps_id = api.vps_ids["demo-web"]
    listing = await api.client.get(f"/api/v2/vps/{vps_id}/snapshots", headers=headers)
    assert listing.status_code == 403
    assert listing.json()["extensions"]["requiredScopes"] == ["read:vm"]
    created = await api.client.post(
        f"/api/v2/vps/{vps_id}/snapshots", json={"name": "ok"}, headers=headers
    )
    assert created.status_code == 202


async def test_readonly_caller_sees_gates_closed_with_forbidden(api: Api) -> None:
    vps_id = api.vps_ids["demo-web"]
    body = (
        await api.client.get(f"/api/v2/vps/{vps_id}/snapshots", headers=api.auth("readonly"))
    ).json()
    assert body["actions"]["canCreate"]["allowed"] is False
    assert body["actions"]["canCreate"]["code"] == "forbidden"


async def test_other_accounts_snapshots_and_jobs_are_404(api: Api) -> None:
    vps_id = api.vps_ids["demo-web"]
    created = await api.client.post(
        f"/api/v2/vps/{vps_id}/snapshots", json={"name": "mine"}, headers=api.auth()
    )
    job_id = created.json()["operation"]["jobId"]
    await api.wait_job(job_id)
    other = api.auth("other")
    checks = [
        ("GET", f"/api/v2/vps/{vps_id}/snapshots", "vps_not_found"),
        ("DELETE", f"/api/v2/vps/{vps_id}/snapshots/mine", "vps_not_found"),
        ("POST", f"/api/v2/vps/{vps_id}/snapshots/mine/actions/restore", "vps_not_found"),
        ("GET", f"/api/jobs/{job_id}", "job_not_found"),
    ]
    for method, path, code in checks:
        response = await api.client.request(method, path, headers=other)
        assert response.status_code == 404, path
        assert response.json()["code"] == code
    post = await api.client.post(
        f"/api/v2/vps/{vps_id}/snapshots", json={"name": "theirs"}, headers=other
    )
    assert post.status_code == 404
    assert post.json()["code"] == "vps_not_found"


async def test_any_valid_key_of_the_account_reads_its_jobs(api: Api) -> None:
    vps_id = api.vps_ids["demo-web"]
    created = await api.client.post(
        f"/api/v2/vps/{vps_id}/snapshots", json={"name": "mine"}, headers=api.auth()
    )
    job_id = created.json()["operation"]["jobId"]
    response = await api.client.get(f"/api/jobs/{job_id}", headers=api.auth("readonly"))
    assert response.status_code == 200
    missing = await api.client.get("/api/jobs/job_01hxa3b4c5d6e7f8g9h0j1k2m3", headers=api.auth())
    assert missing.status_code == 404
    assert missing.json()["code"] == "job_not_found"
