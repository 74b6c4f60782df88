"""One error catalogue (``vpsnap.domain.problems.CATALOGUE``) and everything that must agree
with it: the codes the server can send, the SDK's exception tree and retry decision, the
``/errors`` pages, the OpenAPI examples and docs/api.md.

These are parity tests: adding a code to the server without its SDK exception, its docs line or
its catalogue entry fails here, naming what is missing.
"""

from __future__ import annotations

import ast
import importlib
import pkgutil
import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

import vpsnap
from tests.conftest import Api
from vpsnap.client import errors as sdk_errors
from vpsnap.client._http import RetryPolicy, send
from vpsnap.client._plan import ApiRequest, Send, Sleep
from vpsnap.domain.errors import DomainError
from vpsnap.domain.problems import CATALOGUE

SRC = Path(vpsnap.__file__).parent
DOCS_API = SRC.parents[1] / "docs" / "api.md"


def _server_modules() -> Iterator[str]:
    """Every module of the server (the SDK is another program and has codes of its own)."""
    for info in pkgutil.walk_packages([str(SRC)], prefix="vpsnap."):
        if info.name.startswith(("vpsnap.client", "vpsnap.store.migrations")):
            continue
        if info.name.endswith(".__main__"):  # `python -m` entry points run on import
            continue
        yield info.name


def _subclasses(cls: type[DomainError]) -> Iterator[type[DomainError]]:
    for sub in cls.__subclasses__():
        yield sub
        yield from _subclasses(sub)


def test_every_domain_error_class_has_a_catalogue_code() -> None:
    for name in _server_modules():
        importlib.import_module(name)
    classes = [DomainError, *_subclasses(DomainError)]
    assert len(classes) > 20  # the walk found the tree, not an empty list
    missing = {f"{c.__module__}.{c.__qualname__}": c.code for c in classes}
    missing = {k: v for k, v in missing.items() if v not in CATALOGUE}
    assert not missing, f"codes not in CATALOGUE: {missing}"


def _literal_codes(tree: ast.AST) -> Iterator[tuple[int, str]]:
    """String literals that become a problem's ``code``: ``code="…"`` arguments, ``code = "…"``
    class attributes, and the code argument of ``Gate.refused(reason, "…")``."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            for keyword in node.keywords:
                if keyword.arg == "code" and isinstance(keyword.value, ast.Constant):
                    yield node.lineno, str(keyword.value.value)
            func = node.func
            if (
                isinstance(func, ast.Attribute)
                and func.attr == "refused"
                and len(node.args) >= 2
                and isinstance(node.args[1], ast.Constant)
            ):
                yield node.lineno, str(node.args[1].value)
        elif isinstance(node, ast.ClassDef):
            for statement in node.body:
                targets: list[ast.expr] = []
                if isinstance(statement, ast.Assign):
                    targets, value = statement.targets, statement.value
                elif isinstance(statement, ast.AnnAssign) and statement.value is not None:
                    targets, value = [statement.target], statement.value
                for target in targets:
                    if (
                        isinstance(target, ast.Name)
                        and target.id == "code"
                        and isinstance(value, ast.Constant)
                        and isinstance(value.value, str)
                    ):
                        yield statement.lineno, value.value


def test_every_code_literal_in_the_server_is_in_the_catalogue() -> None:
    found: dict[str, str] = {}
    for path in SRC.rglob("*.py"):
        if "client" in path.relative_to(SRC).parts:
            continue
        for line, code in _literal_codes(ast.parse(path.read_text(), str(path))):
            found[f"{path.relative_to(SRC)}:{line}"] = code
    assert len(found) > 20
    unknown = {where: code for where, code in found.items() if code not in CATALOGUE}
    assert not unknown, f"codes the server can send that are not in CATALOGUE: {unknown}"


def test_the_catalogue_follows_the_status_rules() -> None:
    for code, kind in CATALOGUE.items():
        assert re.fullmatch(r"[a-z][a-z_]*[a-z]", code), code
        assert 400 <= kind.status <= 599, code
        assert kind.title
        assert kind.explanation.endswith("."), code
        # Contract section 3: a 5xx means "retrying may help"; a condition that needs someone
        # to act gets a 4xx code.
        if kind.status >= 500:
            assert kind.retryable, code


@pytest.mark.parametrize("code", sorted(CATALOGUE))
def test_the_sdk_has_an_exception_for_every_code(code: str) -> None:
    status = CATALOGUE[code].status
    cls = sdk_errors.error_class(code, None)  # by code alone, no status to fall back on
    assert cls is not sdk_errors.VpsnapError, f"vpsnap.client.errors has no exception for {code}"
    # ...and it sits under the SDK's class for the code's status.
    assert issubclass(cls, sdk_errors.error_class(None, status)), (code, cls)
    rebuilt = sdk_errors.error_from_problem(
        {"code": code, "status": status, "detail": "d"}, status=status, request_id="req_1"
    )
    assert isinstance(rebuilt, cls)
    assert rebuilt.code == code


def _sdk_retries(status: int, code: str) -> bool:
    """Whether the SDK sends a POST (with its Idempotency-Key) again after this answer."""
    request = ApiRequest("POST", "/x", headers=(("Idempotency-Key", "k"),), body=b"{}")
    plan = send(request, RetryPolicy())
    assert isinstance(next(plan), Send)
    answer = httpx.Response(
        status,
        json={"code": code, "status": status},
        headers={"Content-Type": "application/problem+json", "Retry-After": "1"},
    )
    try:
        effect = plan.send(answer)
    except StopIteration:
        return False
    finally:
        plan.close()
    return isinstance(effect, Sleep)


@pytest.mark.parametrize("code", sorted(CATALOGUE))
def test_the_sdk_retries_exactly_the_retryable_codes(code: str) -> None:
    kind = CATALOGUE[code]
    assert _sdk_retries(kind.status, code) is kind.retryable


def test_docs_api_md_has_a_line_for_every_code() -> None:
    text = DOCS_API.read_text()
    rows = {
        m.group(1): (int(m.group(2)), m.group(3))
        for m in re.finditer(r"^\| `([a-z_]+)` \| (\d{3}) \| (yes|no) \|", text, re.MULTILINE)
    }
    missing = sorted(set(CATALOGUE) - set(rows))
    assert not missing, f"docs/api.md's error table lacks {missing}"
    for code, kind in CATALOGUE.items():
        assert rows[code] == (kind.status, "yes" if kind.retryable else "no"), code
    assert not set(rows) - set(CATALOGUE), "docs/api.md lists codes the server does not have"


async def test_every_code_has_an_errors_page(api: Api) -> None:
    index = await api.client.get("/errors")
    assert index.status_code == 200
    for code, kind in CATALOGUE.items():
        assert f"/errors/{code}'" in index.text, code
        page = await api.client.get(f"/errors/{code}")
        assert page.status_code == 200, code
        assert kind.title in page.text
        assert str(kind.status) in page.text
        assert ("Retrying can help" if kind.retryable else "Retrying will not help") in page.text
        # The explanation's `code spans` are HTML code, never raw backticks.
        assert kind.explanation.count("`") % 2 == 0, code
        assert "`" not in page.text, code
    page = await api.client.get("/errors/database_unavailable")
    assert "after <code>Retry-After</code> seconds" in page.text


async def test_openapi_examples_come_from_the_catalogue(api: Api) -> None:
    document = (await api.client.get("/openapi.json")).json()
    seen: set[str] = set()
    for path, item in document["paths"].items():
        for method, operation in item.items():
            for status, response in operation["responses"].items():
                if not status.isdigit() or int(status) < 400:
                    continue
                content = response.get("content", {}).get("application/problem+json")
                if content is None:
                    continue
                examples = content.get("examples")
                assert examples, (method, path, status)
                for code, example in examples.items():
                    assert code in CATALOGUE, (method, path, code)
                    value = example["value"]
                    assert value["code"] == code
                    assert value["status"] == int(status) == CATALOGUE[code].status
                    assert value["title"] == CATALOGUE[code].title
                    seen.add(code)
    # Every code is shown on at least one operation, except the 405 of a method no operation
    # has, and the hypervisor's codes, which only failed jobs carry (in their `error`).
    assert set(CATALOGUE) - seen == {
        "method_not_allowed",
        "hypervisor_unavailable",
        "disk_unusable",
        "snapshot_ambiguous",
        "vm_config_changed",
        "memory_snapshot_unsupported",
        "restore_incomplete",
    }


async def test_openapi_declares_retry_after_where_a_problem_may_carry_it(api: Api) -> None:
    document = (await api.client.get("/openapi.json")).json()
    declared = 0
    for operations in document["paths"].values():
        for operation in operations.values():
            for status, response in operation.get("responses", {}).items():
                problem = "application/problem+json" in response.get("content", {})
                if status in ("429", "503") and problem:  # not /readyz's own 503
                    header = response["headers"]["Retry-After"]
                    assert header["schema"] == {"type": "integer", "minimum": 0}
                    declared += 1
    assert declared > 20  # every operation may be rate limited
