"""``vpsnap vps``: list and show VPSes, power actions, snapshot slots (upgrade and configure)."""

from __future__ import annotations

from typing import Any

import click

from vpsnap.cli.complete import complete_vps
from vpsnap.cli.output import (
    Column,
    confirm,
    field,
    print_queued,
    print_result,
    refused,
    say,
    show,
    when,
)
from vpsnap.cli.progress import Progress
from vpsnap.cli.state import connected, connection_options, listing_options, yes_option

VPS_COLUMNS = (
    Column("name", field("name")),
    Column("id", field("id")),
    Column("ip", field("primaryIp")),
    Column("service", field("serviceStatus")),
    Column("power", field("powerState")),
    Column("os", field("operatingSystem.displayName")),
    Column("node", field("node")),
    Column("cpus", field("resources.cpuCores"), wide=True),
    Column("memory_gb", field("resources.memoryGb"), wide=True),
    Column("disk_gb", field("resources.storageGb"), wide=True),
    Column("price", lambda r: _price(r.get("billing")), wide=True),
    Column("created", when("createdAt"), wide=True),
)

vps_argument = click.argument("vps", metavar="VPS", shell_complete=complete_vps)
WAIT_TIMEOUT = 600.0


def _price(billing: Any) -> str:
    if not isinstance(billing, dict):
        return "-"
    return f"{billing.get('amount')} {billing.get('currencyCode')}/{billing.get('billingCycle')}"


@click.group(no_args_is_help=True)
def group() -> None:
    """Your VPSes (through the API). VPS is an id, a name or a primary IP."""


@group.command("list")
@click.option("--name", help="Only the VPS with this name (exact, ignoring case).")
@click.option("--ip", "primary_ip", metavar="IP", help="Only VPSes with this primary IP.")
@connection_options
@listing_options
def list_(name: str | None, primary_ip: str | None) -> None:
    """Every VPS of your account, oldest first.

    Columns: name, id, ip, service, power, os, node; with --wide also cpus, memory_gb,
    disk_gb, price, created.
    """
    with connected() as client:
        vpses = [v.raw for v in client.vps.list(name=name, primary_ip=primary_ip)]
    show({"data": vpses}, vpses, VPS_COLUMNS)


@group.command("get")
@vps_argument
@connection_options
@listing_options
def get(vps: str) -> None:
    """One VPS, with its power state as its host reports it now (columns as in list)."""
    with connected() as client:
        found = client.vps.get(vps).raw
    show(found, [found], VPS_COLUMNS)


def _power_command(action: str, help_text: str, question: str | None) -> click.Command:
    @click.option(
        "--wait/--no-wait",
        default=True,
        help="Wait for the job (default), or return once it is queued.",
    )
    @click.option("--timeout", type=click.FloatRange(min=0), default=WAIT_TIMEOUT, help="Seconds.")
    @connection_options
    def command(vps: str, wait: bool, timeout: float, **options: Any) -> None:
        force = bool(options.get("force"))
        yes = bool(options.get("yes"))
        with connected() as client:
            target = client.vps.get(vps)
            ask = question if action != "restart" else (question if force else None)
            if ask and not confirm(ask.format(name=target.name), yes=yes):
                raise refused(action)
            with Progress(f"{action} {target.name}") as progress:
                if action == "restart":
                    operation = client.vps.restart(target, force=force)
                else:
                    operation = getattr(client.vps, action)(target)
                job = operation.wait(timeout=timeout, on_progress=progress.job) if wait else None
        if job is None:
            print_queued(operation)
            return
        result = job.result or {}
        if not print_result(job.raw):
            click.echo(
                f"{action}: {target.name} "
                f"(power: {result.get('powerStateBefore', '?')} → "
                f"{result.get('powerStateAfter', '?')})"
            )

    command.__doc__ = help_text
    command = vps_argument(command)
    if question:
        command = yes_option(command)
    if action == "restart":
        command = click.option(
            "--force", is_flag=True, default=False, help="Stop and start (asks first)."
        )(command)
    return group.command(action)(command)


_power_command("start", "Start the VM (nothing changes when it runs already).", None)
_power_command(
    "shutdown",
    "Ask the guest to power off (ACPI) and wait for it; see stop if it ignores it.",
    None,
)
_power_command(
    "stop",
    "Power the VM off at once, like pulling the plug (asks first unless --yes).",
    "Power {name} off at once? The guest gets no chance to shut down; unsaved data is lost.",
)
_power_command(
    "restart",
    "Graceful shutdown and start; --force: stop and start (asks first unless --yes).",
    "Stop {name} at once and start it again? Unsaved data in the guest is lost.",
)
_power_command(
    "reset",
    "Reset the VM at once, like pressing the reset button (asks first unless --yes).",
    "Reset {name} at once? The guest restarts without shutting down; unsaved data is lost.",
)


@group.command("upgrade-options")
@vps_argument
@connection_options
@listing_options
def upgrade_options(vps: str) -> None:
    """What can be bought for a VPS: snapshot slots (min, max, step, unit price)."""
    with connected() as client:
        options = client.vps.upgrade_options(vps)
    rows = [dict(o) for o in options.raw.get("configurableOptions", [])]
    columns = (
        Column("key", field("key")),
        Column("current", field("currentValue")),
        Column("included", field("includedValue")),
        Column("min", field("min")),
        Column("max", field("max")),
        Column("step", field("step")),
        Column(
            "unit_price",
            lambda r: (
                f"{field('unitPrice.amount')(r)} {field('unitPrice.currencyCode')(r)} "
                f"{field('unitPrice.billingCycle')(r)}"
            ),
        ),
    )
    footer = [] if rows else ["this provider sells no snapshot slots"]
    show(dict(options.raw), rows, columns, footer=footer)


@group.command("configure")
@vps_argument
@click.option(
    "--slots",
    type=click.IntRange(min=0),
    required=True,
    help="The VPS's new total of snapshot slots.",
)
@yes_option
@connection_options
def configure(vps: str, slots: int, yes: bool) -> None:
    """Set a VPS's snapshot slots: shows the price change first and asks (billed by your
    provider), unless --yes."""
    with connected() as client:
        target = client.vps.get(vps)
        preview = client.vps.configure(target, snapshot_slots=slots, dry_run=True)
        change = preview.price_change
        message = (
            f"{target.name}: snapshot slots → {preview.snapshot_slots}: "
            f"{change.amount} {change.currency_code} now, then {change.recurring_amount} "
            f"{change.currency_code} {change.billing_cycle} "
            f"({_signed(change.additional_recurring_amount)} {change.currency_code})"
        )
        if not preview.can_commit.allowed:
            click.echo(
                f"error: {message}: not possible now: {preview.can_commit.reason} "
                f"[{preview.can_commit.code}]",
                err=True,
            )
            raise SystemExit(4)
        if not confirm(f"{message}. Buy?", yes=yes):
            raise refused("configure")
        result = client.vps.configure(target, snapshot_slots=slots)
    if not print_result(result.raw):
        say(f"{target.name} now has {result.snapshot_slots} snapshot slot(s)")


def _signed(amount: str) -> str:
    return amount if amount.startswith("-") else f"+{amount}"
