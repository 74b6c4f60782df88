"""``vpsnap admin audit``: the audit trail of every account (docs/operations.md)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from vpsnap.cli.commands.admin.common import admin_options, iso, load_settings, run_admin
from vpsnap.cli.output import Column, field, show
from vpsnap.domain.errors import NotFound

if TYPE_CHECKING:
    from vpsnap.domain.audit import AuditEvent
    from vpsnap.runtime import Runtime


def _aware(moment: datetime | None) -> datetime | None:
    # A time without an offset is UTC, like every time vpsnap writes.
    if moment is None or moment.tzinfo is not None:
        return moment
    return moment.replace(tzinfo=UTC)


def event_json(event: AuditEvent) -> dict[str, Any]:
    """An audit event with the API's member names, plus its account."""
    return {
        "id": event.id,
        "occurredAt": iso(event.occurred_at),
        "accountId": event.account_id,
        "actor": event.actor.as_json(),
        "action": event.action,
        "outcome": event.outcome.value,
        "target": {"type": event.target.type, "id": event.target.id} if event.target else None,
        "vpsId": event.vps_id,
        "requestId": event.request_id,
        "clientIp": event.client_ip,
        "problemCode": event.problem_code,
        "details": event.details,
    }


@click.command("audit")
@click.option("--account", help="Only this account (its name).")
@click.option("--since", type=click.DateTime(), help="From this time (UTC unless an offset).")
@click.option("--until", type=click.DateTime(), help="Before this time.")
@click.option("--action", help="Only this action, e.g. snapshot.restore or key.revoke.")
@click.option("--vps", help="Only events of this VPS (its id).")
@click.option("--actor", help="Only this actor's events (key id, user id, OS user, scheduler).")
@click.option(
    "--limit", type=click.IntRange(1, 100_000), default=100, show_default=True, help="At most."
)
@admin_options
def command(
    account: str | None,
    since: datetime | None,
    until: datetime | None,
    action: str | None,
    vps: str | None,
    actor: str | None,
    limit: int,
    data_dir: Path | None,
) -> None:
    """Who did what, when and from where, newest first: every account's API, dashboard,
    admin, scheduler and reconciler actions, refusals included."""
    from vpsnap.domain.audit import AuditFilter  # noqa: PLC0415 - server-only import

    async def read(rt: Runtime) -> list[AuditEvent]:
        account_id = None
        if account is not None:
            found = await rt.services.accounts.find_account(account)
            if found is None:
                raise NotFound(f"No account named {account!r}.")
            account_id = found.id
        flt = AuditFilter(
            account_id=account_id,
            vps_id=vps,
            actor_id=actor,
            action=action,
            since=_aware(since),
            until=_aware(until),
        )
        events: list[AuditEvent] = []
        cursor = None
        while len(events) < limit:
            page = await rt.services.audit.list(flt, cursor, min(1000, limit - len(events)))
            events.extend(page.items)
            if page.next_cursor is None:
                break
            cursor = page.next_cursor
        return events

    data = [event_json(e) for e in run_admin(load_settings(data_dir=data_dir), read)]
    columns = (
        Column("time", field("occurredAt")),
        Column("account", field("accountId")),
        Column("actor", lambda r: f"{r['actor']['kind']}:{r['actor']['id']}"),
        Column("action", field("action")),
        Column(
            "outcome",
            lambda r: r["outcome"] + (f" ({r['problemCode']})" if r["problemCode"] else ""),
        ),
        Column(
            "target", lambda r: f"{r['target']['type']}:{r['target']['id']}" if r["target"] else "-"
        ),
        Column("request", field("requestId"), wide=True),
        Column("client", field("clientIp"), wide=True),
    )
    show({"data": data}, data, columns)
