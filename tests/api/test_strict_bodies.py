"""Request bodies are parsed strictly (issue 9, kind 10): JSON types as documented, no coercion
from strings, numbers or other encodings, in every request model.

The walk below finds every body-taking operation of the app and every field of its model
(nested models too) and sends each field a value of every wrong JSON type; a new request model
or field is covered without touching this file (a new model needs a valid base body in
``VALID_BODIES``, which the walk asks for).
"""

from __future__ import annotations

import importlib
import pkgutil
import types
import typing
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.routing import APIRoute
from pydantic import BaseModel

from tests.api.test_errors import assert_problem
from tests.conftest import Api
from vpsnap.api import routes
from vpsnap.api.schemas import RequestModel

# A valid body per request model, by class name: the confused field is put into this.
VALID_BODIES: dict[str, dict[str, Any]] = {
    "CreateSnapshotIn": {"name": "strict", "description": "d"},
    "ScheduleIn": {"enabled": False, "intervalHours": 6},
    "ConfigureIn": {"resources": {"snapshotSlots": 3}, "dryRun": True},
    "ConfigResourcesIn": {"snapshotSlots": 3},
    "RestartIn": {"force": False},
    "PowerActionIn": {},
    "WebhookIn": {
        "url": "https://hooks.example.com/vpsnap",
        "eventTypes": ["job.failed"],
        "description": "d",
    },
}

# Every JSON value of a type other than the field's (a string spelling of the right value, a
# number for a boolean, a boolean for a number, ...).
WRONG_VALUES: dict[type, list[Any]] = {
    bool: ["yes", "true", "1", 1, 0, 1.0, [], {}, None],
    int: ["3", 3.5, 3.0, True, [], {}, None],
    float: ["6", "6.0", True, [], {}, None],
    str: [1, 1.5, True, [], {}],
    BaseModel: ["x", 1, True, [], None],
    list[str]: ["job.failed", 1, True, {}],  # a wrong item points at the item (/eventTypes/0)
}


def _body_routes() -> Iterator[tuple[APIRoute, type[RequestModel]]]:
    """Every operation that takes a body (of every router module), with its request model."""
    for info in pkgutil.iter_modules(routes.__path__, prefix="vpsnap.api.routes."):
        router = getattr(importlib.import_module(info.name), "router", None)
        for route in getattr(router, "routes", ()):
            if isinstance(route, APIRoute) and route.body_field is not None:
                yield route, _model_of(route.body_field.field_info.annotation)


def _model_of(annotation: Any) -> type[RequestModel]:
    """The request model of a body annotation (``Model`` or ``Model | None``)."""
    for candidate in (annotation, *typing.get_args(annotation)):
        if isinstance(candidate, type) and issubclass(candidate, RequestModel):
            return candidate
    raise AssertionError(f"body {annotation!r} is not a RequestModel")


def _field_type(annotation: Any) -> tuple[type, bool]:
    """The JSON type a field documents, and whether null is allowed."""
    args = typing.get_args(annotation)
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        concrete = [a for a in args if a is not type(None)]
        assert len(concrete) == 1, annotation
        return _field_type(concrete[0])[0], True
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return BaseModel, False
    assert annotation in WRONG_VALUES, f"no wrong values for {annotation!r}"
    return annotation, False


def _confusions(model: type[RequestModel], prefix: str = "") -> Iterator[tuple[str, Any]]:
    """(JSON pointer, wrong value) for every field of ``model`` and of its nested models."""
    for name, field in model.model_fields.items():
        alias = field.alias or name
        pointer = f"{prefix}/{alias}"
        json_type, nullable = _field_type(field.annotation)
        for value in WRONG_VALUES[json_type]:
            if value is None and nullable:
                continue
            yield pointer, value
        if json_type is BaseModel:
            nested = field.annotation
            assert isinstance(nested, type) and issubclass(nested, RequestModel), nested
            yield from _confusions(nested, pointer)


def _with(body: dict[str, Any], pointer: str, value: Any) -> dict[str, Any]:
    """A deep copy of ``body`` with the member at ``pointer`` set to ``value``."""
    copy: dict[str, Any] = {k: (dict(v) if isinstance(v, dict) else v) for k, v in body.items()}
    *parents, last = pointer.strip("/").split("/")
    target = copy
    for part in parents:
        target = target[part]
    target[last] = value
    return copy


def _path(route: APIRoute, api: Api) -> str:
    # The power actions on demo-db (disk images only): a confusion that got through would be
    # refused with 409 instead of starting a VM that outlives the test.
    vps = "demo-db" if "/actions/" in route.path and "config" not in route.path else "demo-web"
    return route.path.replace("{vps_id}", api.vps_ids[vps])


def test_every_request_model_is_strict() -> None:
    def subclasses(cls: type[RequestModel]) -> Iterator[type[RequestModel]]:
        for sub in cls.__subclasses__():
            yield sub
            yield from subclasses(sub)

    models = list(subclasses(RequestModel))
    assert len(models) >= len(VALID_BODIES)
    for model in [RequestModel, *models]:
        assert model.model_config.get("strict") is True, model


def test_every_body_model_has_a_valid_base_body() -> None:
    routes = list(_body_routes())
    assert {r.operation_id for r, _ in routes} >= {
        "createSnapshot",
        "putSnapshotSchedule",
        "configureVps",
        "restartVps",
        "startVps",
    }
    for _, model in routes:
        assert model.__name__ in VALID_BODIES, f"add a valid body of {model.__name__}"
        model.model_validate(VALID_BODIES[model.__name__])  # the base really is valid


async def test_include_memory_state_yes_is_not_true(api: Api) -> None:
    """The reproduction of issue 9, kind 10."""
    response = await api.client.post(
        f"/api/v2/vps/{api.vps_ids['demo-web']}/snapshots",
        json={"name": "x", "includeMemoryState": "yes"},
        headers=api.auth(),
    )
    body = assert_problem(response, 400, "invalid_request")
    assert [(e["pointer"], e["code"]) for e in body["errors"]] == [
        ("/includeMemoryState", "invalid_type")
    ]
    listing = await api.client.get(
        f"/api/v2/vps/{api.vps_ids['demo-web']}/snapshots", headers=api.auth()
    )
    assert listing.json()["data"] == []


async def test_every_field_of_every_body_refuses_other_json_types(api: Api) -> None:
    tried = 0
    for route, model in _body_routes():
        method = next(iter(route.methods))
        base = VALID_BODIES[model.__name__]
        for pointer, value in _confusions(model):
            response = await api.client.request(
                method, _path(route, api), json=_with(base, pointer, value), headers=api.auth()
            )
            where = (route.operation_id, pointer, value)
            assert response.status_code == 400, (where, response.text)
            body = response.json()
            assert body["code"] == "invalid_request", where
            assert [e["pointer"] for e in body["errors"]] == [pointer], (where, body)
            assert body["errors"][0]["code"] == "invalid_type", (where, body)
            tried += 1
    assert tried > 50
    # Nothing was created, changed or queued by any of them.
    listing = await api.client.get(
        f"/api/v2/vps/{api.vps_ids['demo-web']}/snapshots", headers=api.auth()
    )
    assert listing.json()["data"] == []
    assert listing.json()["limits"]["totalSnapshots"] == 3


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        # JSON numbers are one type: an integer is a valid float.
        ({"enabled": True, "intervalHours": 6}, 200),
        ({"enabled": True, "intervalHours": 6.5}, 200),
    ],
)
async def test_numbers_stay_numbers(api: Api, body: dict[str, Any], expected: int) -> None:
    response = await api.client.post(
        f"/api/v2/vps/{api.vps_ids['demo-web']}/snapshot-schedules", json=body, headers=api.auth()
    )
    assert response.status_code == expected, response.text
