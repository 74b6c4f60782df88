"""How the client commands show things: Rich tables for people, the API's own JSON for
scripts, relative times ("in 23 h"), and errors as one line plus the request id."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from vpsnap.client import Gate, Job, Snapshot, SnapshotList, Vps, VpsnapError


class Output(StrEnum):
    TABLE = "table"
    JSON = "json"


PIPE_WIDTH = 160


def out() -> Console:
    # Built per call: the test runner swaps sys.stdout, and a Console keeps the file it got.
    console = Console(highlight=False)
    if not console.is_terminal and "COLUMNS" not in os.environ:
        # Piped into a file or a pager: Rich's 80 columns would cut ids and names.
        console.width = PIPE_WIDTH
    return console


def err() -> Console:
    return Console(stderr=True, highlight=False, soft_wrap=True)


def print_json(value: object) -> None:
    print(json.dumps(value, indent=2, ensure_ascii=False))  # noqa: T201 - stdout is the output


def relative(moment: datetime, now: datetime | None = None) -> str:
    """``in 23 h`` / ``5 min ago``: whole units, rounded down, as people read an expiry."""
    seconds = (moment - (now or datetime.now(UTC))).total_seconds()
    span = abs(seconds)
    if span < 60:
        text = f"{int(span)} s"
    elif span < 3600:
        text = f"{int(span // 60)} min"
    elif span < 2 * 86400:
        text = f"{int(span // 3600)} h"
    else:
        text = f"{int(span // 86400)} d"
    return f"in {text}" if seconds >= 0 else f"{text} ago"


def vps_table(vpses: Iterable[Vps]) -> Table:
    table = Table(box=box.SIMPLE, pad_edge=False)
    # Names, ids and addresses are what people copy: never cut them; the rest may wrap.
    for column in ("NAME", "ID", "PRIMARY IP", "SERVICE", "POWER"):
        table.add_column(column, no_wrap=True)
    table.add_column("OS")
    table.add_column("NODE")
    for vps in vpses:
        table.add_row(
            escape(vps.name),
            vps.id,
            vps.primary_ip or "-",
            vps.service_status,
            vps.power_state,
            escape(vps.operating_system.display_name) if vps.operating_system else "-",
            escape(vps.node),
        )
    return table


def _gate(label: str, gate: Gate) -> str:
    if gate.allowed:
        return f"{label}: yes"
    return f"{label}: no ({gate.code}) {escape(gate.reason or '')}"


def snapshot_table(vps_label: str, listing: SnapshotList) -> Table:
    limits = listing.limits
    gates = (
        _gate("create", listing.actions.can_create),
        _gate("restore", listing.actions.can_restore),
    )
    table = Table(
        box=box.SIMPLE,
        pad_edge=False,
        title=f"{escape(vps_label)}: {limits.used_snapshots} of {limits.total_snapshots} "
        "snapshot slots used",
        title_justify="left",
        caption="\n".join(gates),
        caption_justify="left",
    )
    for column in ("NAME", "STATUS", "CREATED", "EXPIRES", "CONSISTENCY", "ORIGIN"):
        table.add_column(column, no_wrap=True)
    table.add_column("PARENT")
    table.add_column("DESCRIPTION")
    for snap in listing.snapshots:
        table.add_row(
            escape(snap.name),
            snap.status,
            relative(snap.created_at),
            relative(snap.expires_at),
            # "memory" consistency means the RAM state is included: no column of its own.
            snap.consistency,
            snap.origin,
            escape(snap.parent_name or "-"),
            escape(snap.description or ""),
        )
    return table


def snapshot_line(vps_label: str, snap: Snapshot) -> str:
    return (
        f"snapshot {escape(snap.name)!r} of {escape(vps_label)}: {snap.status}, "
        f"expires {relative(snap.expires_at)} ({snap.expires_at:%Y-%m-%d %H:%M} UTC)"
    )


def job_line(job: Job[Any]) -> str:
    subject = f" (snapshot {escape(job.snapshot_name)!r})" if job.snapshot_name else ""
    return f"{job.job_id} {job.type}{subject}: {job.status}"


def error_document(error: VpsnapError) -> dict[str, Any]:
    document: dict[str, Any] = {
        "code": error.code,
        "status": error.status,
        "detail": error.detail,
        "requestId": error.request_id,
    }
    if error.field_errors:
        document["errors"] = [
            {"pointer": f.pointer, "detail": f.detail, "code": f.code} for f in error.field_errors
        ]
    return document


def report_error(error: VpsnapError, output: Output) -> None:
    """One line saying what went wrong (field errors included), then the request id to quote;
    with ``--output json`` also ``{"error": …}`` on stdout for scripts."""
    fields = "; ".join(f"{f.pointer}: {f.detail}" for f in error.field_errors)
    line = f"[red]error:[/red] {escape(error.detail)}"
    if fields:
        line += f" ({escape(fields)})"
    console = err()
    console.print(f"{line} {escape(f'[{error.code}]')}")
    if error.request_id:
        console.print(f"request id: {error.request_id}")
    if output is Output.JSON:
        print_json({"error": error_document(error)})
