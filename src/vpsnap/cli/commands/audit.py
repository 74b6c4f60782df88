"""``vpsnap audit``: the account's audit trail, as the API shows it to a key with
``read:audit`` (operators see every account with ``vpsnap admin audit``)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import click

from vpsnap.cli.complete import complete_vps
from vpsnap.cli.output import Column, Row, field, show, when
from vpsnap.cli.state import connected, connection_options, listing_options, page_options

# The API's actor kinds (vpsnap.client.ACTOR_KINDS; a test keeps them equal). Written out
# here so that `--help` and completion need not import the SDK and httpx.
ACTOR_KINDS = ("api_key", "user", "admin", "scheduler", "reconciler")


def _actor(row: Row) -> str:
    actor = row.get("actor") or {}
    return f"{actor.get('kind')}:{actor.get('id')}"


def _outcome(row: Row) -> str:
    code = row.get("problemCode")
    return f"{row.get('outcome')} ({code})" if code else str(row.get("outcome"))


def _target(row: Row) -> str:
    target = row.get("target")
    return f"{target['type']}:{target['id']}" if target else "-"


AUDIT_COLUMNS = (
    Column("time", when("occurredAt")),
    Column("actor", _actor),
    Column("action", field("action")),
    Column("outcome", _outcome),
    Column("target", _target),
    Column("vps", field("vpsId")),
    Column("id", field("id"), wide=True),
    Column("occurred_at", field("occurredAt"), wide=True),
    Column("actor_label", field("actor.label"), wide=True),
    Column("request", field("requestId"), wide=True),
    Column("client_ip", field("clientIp"), wide=True),
)


@click.group(no_args_is_help=True)
def group() -> None:
    """The account's audit trail: who did what, when and from where (needs read:audit,
    which write:all grants)."""


@group.command("list")
@click.option("--vps", metavar="VPS", shell_complete=complete_vps, help="Only events of this VPS.")
@click.option(
    "--actor", metavar="ID", help="Only this actor's events (key_…, a user id, scheduler, …)."
)
@click.option("--actor-kind", type=click.Choice(ACTOR_KINDS), help="Only actors of this kind.")
@click.option("--action", metavar="ACTION", help="Only this action, e.g. snapshot.restore.")
@click.option("--since", type=click.DateTime(), help="From this time, inclusive (UTC).")
@click.option("--until", type=click.DateTime(), help="Before this time (UTC).")
@page_options(
    "Continue after a previous page (printed when there are more; give the same filters)."
)
@connection_options
@listing_options
def list_(
    vps: str | None,
    actor: str | None,
    actor_kind: str | None,
    action: str | None,
    since: datetime | None,
    until: datetime | None,
    limit: int,
    cursor: str | None,
) -> None:
    """The account's audit events, newest first: API, dashboard, admin, scheduler and
    reconciler actions, refusals included.

    Columns: time, actor, action, outcome, target, vps; --wide adds id, occurred_at,
    actor_label, request, client_ip.
    """
    items: list[Any] = []
    next_cursor = cursor
    with connected() as client:
        pager = client.audit.list(
            vps=client.vps.get(vps).id if vps else None,
            actor=actor,
            actor_kind=actor_kind,
            action=action,
            since=since,
            until=until,
        )
        while len(items) < limit:
            page = pager.page(next_cursor, min(limit - len(items), 100))
            items.extend(e.raw for e in page.items)
            next_cursor = page.next_cursor
            if next_cursor is None:
                break
    footer = [f"more: vpsnap audit list --cursor {next_cursor}"] if next_cursor else []
    document = {"data": items, "hasMore": next_cursor is not None, "nextCursor": next_cursor}
    show(document, items, AUDIT_COLUMNS, footer=footer)
