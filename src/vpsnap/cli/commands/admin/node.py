"""``vpsnap admin node``: the hypervisor nodes (list, drain, undrain)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import click

from vpsnap.cli.commands.admin.common import admin_options, iso, load_settings, run_admin
from vpsnap.cli.output import Column, field, print_result, show


@click.group(no_args_is_help=True)
def group() -> None:
    """Hypervisor nodes: their agents, VPSes and waiting jobs; drain one for maintenance."""


@group.command("list")
@admin_options
def list_(data_dir: Path | None) -> None:
    """Every node with an agent or VPSes: state (online, drained, offline), version, last
    heartbeat, VPS count, jobs waiting to start and the age of the oldest."""
    from vpsnap.services.nodes import NodeAdmin  # noqa: PLC0415

    rows = run_admin(
        load_settings(data_dir=data_dir),
        lambda rt: NodeAdmin(rt.store, rt.services.nodes).report(),
    )
    now = datetime.now(UTC)
    data = [
        {
            "name": r.name,
            "state": r.state.value,
            "version": r.version,
            "startedAt": iso(r.started_at),
            "lastSeenAt": iso(r.last_seen_at),
            "vpsCount": r.vps_count,
            "queuedJobs": r.queued_jobs,
            "oldestQueuedSeconds": round((now - r.oldest_queued_at).total_seconds())
            if r.oldest_queued_at
            else None,
        }
        for r in rows
    ]
    columns = (
        Column("node", field("name")),
        Column("state", field("state")),
        Column("version", field("version")),
        Column("last heartbeat", field("lastSeenAt")),
        Column("vps", field("vpsCount")),
        Column("queued", field("queuedJobs")),
        Column("oldest queued (s)", field("oldestQueuedSeconds")),
    )
    show({"data": data}, data, columns)


def _drain(name: str, data_dir: Path | None, *, drained: bool) -> None:
    from vpsnap.services.nodes import NodeAdmin  # noqa: PLC0415

    run_admin(
        load_settings(data_dir=data_dir),
        lambda rt: NodeAdmin(rt.store, rt.services.nodes).set_drained(name, drained),
    )
    if not print_result({"name": name, "drained": drained}):
        if drained:
            click.echo(
                f"drained {name}: no new work is accepted for its VPSes (node_unavailable); "
                "jobs already queued still run"
            )
        else:
            click.echo(f"undrained {name}: it takes new work again")


@group.command("drain")
@click.argument("name")
@admin_options
def drain(name: str, data_dir: Path | None) -> None:
    """Take no new work for NAME's VPSes (maintenance); queued jobs still run."""
    _drain(name, data_dir, drained=True)


@group.command("undrain")
@click.argument("name")
@admin_options
def undrain(name: str, data_dir: Path | None) -> None:
    """Let NAME take new work again."""
    _drain(name, data_dir, drained=False)
