"""``vpsnap webhooks``: the account's webhook endpoints (job and snapshot events, signed per
Standard Webhooks), test events and delivery attempts (docs/webhooks.md)."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import click

from vpsnap.cli.exit_codes import ExitCode
from vpsnap.cli.output import (
    Column,
    Row,
    confirm,
    field,
    print_result,
    refused,
    say,
    show,
    when,
)
from vpsnap.cli.state import (
    connected,
    connection_options,
    listing_options,
    page_options,
    yes_option,
)

if TYPE_CHECKING:
    from vpsnap.client import Client, WebhookDelivery

# What an endpoint can subscribe to (vpsnap.client.EVENT_TYPES; a test keeps them equal).
# Written out here so that `--help` and completion need not import the SDK and httpx.
EVENT_TYPES = (
    "job.completed",
    "job.failed",
    "snapshot.created",
    "snapshot.restored",
    "snapshot.deleted",
    "snapshot.expired",
)
POLL_SECONDS = 0.5  # how often `test --wait` looks for the first attempt


def _events(row: Row) -> str:
    return ",".join(row.get("eventTypes") or [])


WEBHOOK_COLUMNS = (
    Column("id", field("id")),
    Column("url", field("url")),
    Column("enabled", field("enabled")),
    Column("events", _events),
    Column("last_success", when("lastSuccessAt")),
    Column("last_failure", when("lastFailureAt")),
    Column("description", field("description", "")),
    Column("created_at", field("createdAt"), wide=True),
    Column("disabled_at", field("disabledAt"), wide=True),
    Column("disabled_reason", field("disabledReason"), wide=True),
)
DELIVERY_COLUMNS = (
    Column("time", when("attemptedAt")),
    Column("event", field("eventType")),
    Column("attempt", field("attempt")),
    Column("outcome", field("outcome")),
    Column("status", field("statusCode")),
    Column("ms", field("durationMs")),
    Column("error", field("error", "")),
    Column("message", field("messageId"), wide=True),
    Column("attempted_at", field("attemptedAt"), wide=True),
    Column("id", field("id"), wide=True),
)

webhook_argument = click.argument("webhook_id", metavar="WEBHOOK")


@click.group(no_args_is_help=True)
def group() -> None:
    """Webhook endpoints: vpsnap calls them when a job ends or a snapshot is created,
    restored, deleted or expires (needs write:vm). WEBHOOK is an id (whk_…)."""


@group.command("list")
@connection_options
@listing_options
def list_() -> None:
    """The account's endpoints (at most 10; their secrets are never shown again).

    Columns: id, url, enabled, events, last_success, last_failure, description; --wide adds
    created_at, disabled_at, disabled_reason.
    """
    with connected() as client:
        items = [w.raw for w in client.webhooks.list()]
    show({"data": items}, items, WEBHOOK_COLUMNS)


@group.command("get")
@webhook_argument
@connection_options
@listing_options
def get(webhook_id: str) -> None:
    """One endpoint as it is now (columns as in list)."""
    with connected() as client:
        webhook = client.webhooks.get(webhook_id)
    footer = [f"disabled: {webhook.disabled_reason}"] if not webhook.enabled else []
    show(dict(webhook.raw), [webhook.raw], WEBHOOK_COLUMNS, footer=footer)


@group.command("create")
@click.argument("endpoint_url", metavar="URL")  # `url` is --url, the API's
@click.option(
    "--event",
    "events",
    type=click.Choice(EVENT_TYPES),
    multiple=True,
    help="An event to receive (repeat the option for more; default: all of them).",
)
@click.option("-d", "--description", help="A note for people (at most 255 characters).")
@connection_options
@listing_options
def create(endpoint_url: str, events: tuple[str, ...], description: str | None) -> None:
    """Register an endpoint at URL (http or https; it must resolve to public addresses unless
    the operator allows more). Prints its signing secret, shown this once: store it to verify
    the webhook-signature of each request."""
    with connected() as client:
        created = client.webhooks.create(
            endpoint_url, event_types=list(events) or None, description=description
        )
    if print_result(dict(created.raw)):
        return
    show(dict(created.raw), [created.raw], WEBHOOK_COLUMNS)
    click.echo()
    click.echo(f"secret: {created.secret}")
    click.echo("(shown only now: store it to verify signatures, see docs/webhooks.md)")


@group.command("delete")
@webhook_argument
@yes_option
@connection_options
def delete(webhook_id: str, yes: bool) -> None:
    """Remove an endpoint; its undelivered events are dropped and its delivery history is
    removed."""
    with connected() as client:
        webhook = client.webhooks.get(webhook_id)
        question = (
            f"Delete webhook {webhook.id} ({webhook.url})? Its undelivered events are dropped "
            "and its delivery history removed."
        )
        if not confirm(question, yes=yes):
            raise refused("delete")
        client.webhooks.delete(webhook)
    if not print_result({"id": webhook.id, "deleted": True}):
        say(f"deleted webhook {webhook.id} ({webhook.url})")


def _first_attempt(
    client: Client, webhook_id: str, message_id: str, timeout: float
) -> WebhookDelivery | None:
    """The first delivery attempt of ``message_id`` (None after ``timeout`` seconds).

    Attempts are listed newest first; the test's is among the newest few unless other events
    of the endpoint crowd it out, so one page of 100 is enough to look at."""
    deadline = time.monotonic() + timeout
    while True:
        page = client.webhooks.deliveries(webhook_id, limit=100).page()
        mine = [d for d in page.items if d.message_id == message_id]
        if mine:
            return min(mine, key=lambda d: d.attempt)
        if time.monotonic() >= deadline:
            return None
        time.sleep(min(POLL_SECONDS, max(0.0, deadline - time.monotonic())))


@group.command("test")
@webhook_argument
@click.option(
    "--wait",
    "wait_",
    is_flag=True,
    default=False,
    help="Wait for the first delivery attempt and show it; exit 1 when it failed.",
)
@click.option(
    "--timeout",
    type=click.FloatRange(min=0),
    default=30.0,
    show_default=True,
    help="Seconds to wait with --wait (exit 8 after them).",
)
@connection_options
@listing_options
def test(webhook_id: str, wait_: bool, timeout: float) -> None:
    """Send a signed webhook.test event to this endpoint alone; its attempts show up in
    `vpsnap webhooks deliveries WEBHOOK` within seconds."""
    with connected() as client:
        sent = client.webhooks.test(webhook_id)
        attempt = _first_attempt(client, webhook_id, sent.message_id, timeout) if wait_ else None
    if not wait_:
        if not print_result(dict(sent.raw)):
            say(
                f"queued {sent.event_type} as {sent.message_id}; see: vpsnap webhooks "
                f"deliveries {webhook_id}"
            )
        return
    if attempt is None:
        click.echo(
            f"error: no delivery attempt of {sent.message_id} within {timeout:g} s (it is still "
            f"queued; see vpsnap webhooks deliveries {webhook_id})",
            err=True,
        )
        raise SystemExit(ExitCode.TIMEOUT)
    document: dict[str, Any] = {**sent.raw, "delivery": dict(attempt.raw)}
    show(document, [attempt.raw], DELIVERY_COLUMNS)
    if attempt.outcome != "delivered":
        raise SystemExit(ExitCode.ERROR)


@group.command("deliveries")
@webhook_argument
@page_options()
@connection_options
@listing_options
def deliveries(webhook_id: str, limit: int, cursor: str | None) -> None:
    """An endpoint's delivery attempts, newest first: status code or error, duration, attempt
    number (a failed message is retried with backoff for a day).

    Columns: time, event, attempt, outcome, status, ms, error; --wide adds message,
    attempted_at, id.
    """
    items: list[Any] = []
    next_cursor = cursor
    with connected() as client:
        pager = client.webhooks.deliveries(webhook_id)
        while len(items) < limit:
            page = pager.page(next_cursor, min(limit - len(items), 100))
            items.extend(d.raw for d in page.items)
            next_cursor = page.next_cursor
            if next_cursor is None:
                break
    footer = (
        [f"more: vpsnap webhooks deliveries {webhook_id} --cursor {next_cursor}"]
        if next_cursor
        else []
    )
    document = {"data": items, "hasMore": next_cursor is not None, "nextCursor": next_cursor}
    show(document, items, DELIVERY_COLUMNS, footer=footer)
