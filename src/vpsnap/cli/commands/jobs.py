"""``vpsnap jobs``: list, show and wait for jobs (creates, deletes, restores, power actions)."""

from __future__ import annotations

from typing import Any

import click

from vpsnap.cli.complete import complete_vps
from vpsnap.cli.output import Column, field, print_result, show, when
from vpsnap.cli.progress import Progress, job_line
from vpsnap.cli.state import (
    connected,
    connection_options,
    listing_options,
    page_options,
    state,
)

JOB_COLUMNS = (
    Column("id", field("jobId")),
    Column("type", field("type")),
    Column("status", field("status")),
    Column("snapshot", field("snapshotName")),
    Column("vps", field("vpsId")),
    Column("created", when("createdAt")),
    Column("finished", when("finishedAt")),
    Column("error", field("error.code", "")),
    Column("progress", field("progress"), wide=True),
    Column("created_at", field("createdAt"), wide=True),
    Column("finished_at", field("finishedAt"), wide=True),
)
STATUSES = ("pending", "queued", "in_progress", "completed", "failed")

job_argument = click.argument("job_id", metavar="JOB")
timeout_option = click.option(
    "--timeout",
    type=click.FloatRange(min=0),
    default=600.0,
    show_default=True,
    help="Seconds to wait.",
)


@click.group(no_args_is_help=True)
def group() -> None:
    """Jobs: every create, delete, restore and power action runs as one."""


@group.command("list")
@click.option("--vps", metavar="VPS", shell_complete=complete_vps, help="Only this VPS's jobs.")
@click.option("--status", type=click.Choice(STATUSES), help="Only jobs in this status.")
@page_options()
@connection_options
@listing_options
def list_(vps: str | None, status: str | None, limit: int, cursor: str | None) -> None:
    """The account's jobs, newest first (finished ones are kept at least 7 days).

    Columns: id, type, status, snapshot, vps, created, finished, error; --wide adds
    progress, created_at, finished_at.
    """
    items: list[Any] = []
    next_cursor = cursor
    with connected() as client:
        vps_id = client.vps.get(vps).id if vps else None
        pager = client.jobs.list(vps_id=vps_id, status=status)
        while len(items) < limit:
            page = pager.page(next_cursor, min(limit - len(items), 100))
            items.extend(j.raw for j in page.items)
            next_cursor = page.next_cursor
            if next_cursor is None:
                break
    footer = [f"more: vpsnap jobs list --cursor {next_cursor}"] if next_cursor else []
    document = {"data": items, "hasMore": next_cursor is not None, "nextCursor": next_cursor}
    show(document, items, JOB_COLUMNS, footer=footer)


@group.command("get")
@job_argument
@connection_options
@listing_options
def get(job_id: str) -> None:
    """One job as it is now (columns as in list)."""
    with connected() as client:
        job = client.jobs.get(job_id)
    show(dict(job.raw), [job.raw], JOB_COLUMNS)


@group.command("wait")
@job_argument
@timeout_option
@connection_options
def wait(job_id: str, timeout: float) -> None:
    """Wait until a job ends. Exit 0 when it completed, 7 when it failed, 8 on timeout."""
    with connected() as client, Progress(f"waiting for {job_id}") as progress:
        job = client.jobs.wait(job_id, timeout=timeout, on_progress=progress.job)
    if not print_result(job.raw) and state().format == "table":
        click.echo(job_line(job))
