"""Path and query parameters with their documented shapes, checked at the edge.

Invariant (docs/api.md, "Input"): every identifier, filter and cursor is checked against its
documented shape before anything else sees it; the store is never the validator. A path
parameter that names a resource answers that resource's 404 when malformed
(``problems.PATH_NOT_FOUND``): an id of the wrong shape cannot exist, and a different answer
would only tell the shape, which is documented anyway. A malformed filter answers
``400 invalid_request``; a malformed cursor ``400 invalid_cursor`` (``services.pagination``).

The services check ids and names again (``services.access``, ``services.jobs``,
``services.snapshots``), so that callers other than the API (the CLI, a dashboard) get the same
404 without the store being asked.
"""

from __future__ import annotations

import ipaddress
from typing import Annotated

from fastapi import Path, Query
from pydantic import AfterValidator

from vpsnap.domain.ids import JOB_ID_PATTERN, VPS_ID_PATTERN, id_pattern
from vpsnap.domain.rules import (
    NAME_FILTER_MAX_LENGTH,
    NAME_FILTER_PATTERN,
    SNAPSHOT_NAME_PATTERN,
)

VpsIdPath = Annotated[
    str,
    Path(
        pattern=VPS_ID_PATTERN,
        description="The VPS's id (`vps_` + a lowercase ULID).",
        examples=["vps_01hxa3b4c5d6e7f8g9h0j1k2m3"],
    ),
]
JobIdPath = Annotated[
    str,
    Path(
        pattern=JOB_ID_PATTERN,
        description="The job's id (`job_` + a lowercase ULID).",
        examples=["job_01hxa3b4c5d6e7f8g9h0j1k2m3"],
    ),
]
SnapshotNamePath = Annotated[
    str,
    Path(
        pattern=SNAPSHOT_NAME_PATTERN,
        description="The snapshot's name (matched ignoring case).",
        examples=["before-upgrade"],
    ),
]
WebhookIdPath = Annotated[
    str,
    Path(
        pattern=id_pattern("whk"),
        description="The webhook endpoint's id (`whk_` + a lowercase ULID).",
        examples=["whk_01hxa3b4c5d6e7f8g9h0j1k2m3"],
    ),
]
VpsIdFilter = Annotated[
    str | None,
    Query(
        alias="vpsId",
        pattern=VPS_ID_PATTERN,
        description="Only events of this VPS (`vps_` + a lowercase ULID).",
    ),
]
ErrorCodePath = Annotated[
    str, Path(pattern=r"^[a-z_]{1,64}$", description="A problem code.", examples=["rate_limited"])
]


def _ip_address(value: str) -> str:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        raise ValueError("Not an IPv4 or IPv6 address.") from None
    return value


NameFilter = Annotated[
    str | None,
    Query(
        min_length=1,
        max_length=NAME_FILTER_MAX_LENGTH,
        pattern=NAME_FILTER_PATTERN,
        description="Exact VPS name, ignoring case: 1 to 100 characters, no control characters.",
    ),
]
IpFilter = Annotated[
    str | None,
    Query(
        alias="primaryIp",
        max_length=64,
        description="Exact primary IP address (IPv4 or IPv6).",
        json_schema_extra={
            "anyOf": [{"type": "string", "format": "ipv4"}, {"type": "string", "format": "ipv6"}]
        },
    ),
    AfterValidator(lambda v: None if v is None else _ip_address(v)),
]
CursorParam = Annotated[
    str | None,
    Query(description="`nextCursor` of the previous page (opaque; any other → invalid_cursor)."),
]
