"""Issue 9, kind 5: every code the drivers use for a condition retrying cannot change is
declared the same way everywhere: a domain error, a 409 catalogue entry with an /errors page,
an SDK class (never retried: SDK retries only 5xx), and a line in docs/api.md."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import Api
from vpsnap.client import errors as sdk_errors
from vpsnap.domain import errors as domain_errors
from vpsnap.domain.problems import CATALOGUE

CODES = {
    "disk_unusable": "DiskUnusable",
    "snapshot_ambiguous": "SnapshotAmbiguous",
    "vm_config_changed": "VmConfigChanged",
    "memory_snapshot_unsupported": "MemorySnapshotUnsupported",
    "restore_incomplete": "RestoreIncomplete",
}
DOCS = Path(__file__).resolve().parents[2] / "docs" / "api.md"


@pytest.mark.parametrize(("code", "name"), CODES.items())
def test_the_code_is_declared_alike_everywhere(code: str, name: str) -> None:
    domain_cls = getattr(domain_errors, name)
    assert domain_cls.code == code
    assert issubclass(domain_cls, domain_errors.Conflict)
    assert CATALOGUE[code].status == 409
    sdk_cls = getattr(sdk_errors, name)
    assert sdk_cls.code == code
    assert sdk_errors.error_class(code, 409) is sdk_cls
    assert f"`{code}`" in DOCS.read_text()


async def test_each_code_has_its_errors_page(api: Api) -> None:
    for code in CODES:
        page = await api.client.get(f"/errors/{code}")
        assert page.status_code == 200, code
        assert CATALOGUE[code].title in page.text
