"""``vpsnap schedules``: a VPS's snapshot schedule (one per VPS)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from vpsnap.cli.complete import complete_vps
from vpsnap.cli.output import Column, confirm, field, print_result, refused, say, show, when
from vpsnap.cli.state import connected, connection_options, listing_options, yes_option

if TYPE_CHECKING:
    from vpsnap.client import ScheduleState

SCHEDULE_COLUMNS = (
    Column("enabled", field("schedule.enabled")),
    Column("every_hours", field("schedule.intervalHours")),
    Column("next_run", when("schedule.nextRunAt")),
    Column("last_run", when("schedule.lastRunAt")),
    Column("last_status", field("schedule.lastRunStatus")),
    Column(
        "slots", lambda r: f"{field('limits.usedSnapshots')(r)}/{field('limits.totalSnapshots')(r)}"
    ),
    Column("next_run_at", field("schedule.nextRunAt"), wide=True),
    Column("last_run_at", field("schedule.lastRunAt"), wide=True),
)

vps_argument = click.argument("vps", metavar="VPS", shell_complete=complete_vps)


@click.group(no_args_is_help=True)
def group() -> None:
    """A VPS's snapshot schedule: a snapshot auto-YYYYMMDD-HHMM every N hours (4..24); when
    every slot is used, the oldest scheduled snapshot makes room (manual ones never do)."""


def _show(name: str, state: ScheduleState) -> None:
    rows = [state.raw] if state.schedule is not None else []
    footer = [] if state.schedule is not None else [f"{name} has no schedule"]
    if not state.can_enable.allowed:
        footer.append(f"cannot be enabled: {state.can_enable.reason} [{state.can_enable.code}]")
    show(dict(state.raw), rows, SCHEDULE_COLUMNS, title=f"{name}: snapshot schedule", footer=footer)


@group.command("get")
@vps_argument
@connection_options
@listing_options
def get(vps: str) -> None:
    """The schedule of a VPS (columns: enabled, every_hours, next_run, last_run, last_status,
    slots; --wide adds the ISO timestamps)."""
    with connected() as client:
        target = client.vps.get(vps)
        state = client.schedules.get(target)
    _show(target.name, state)


@group.command("set")
@vps_argument
@click.option(
    "--every",
    "hours",
    type=click.FloatRange(min=0, min_open=True),
    required=True,
    metavar="HOURS",
    help="Hours between snapshots; the server floors and clamps it to 4..24.",
)
@click.option("--disable", is_flag=True, default=False, help="Keep the schedule, switched off.")
@connection_options
@listing_options
def set_(vps: str, hours: float, disable: bool) -> None:
    """Create or replace the schedule of a VPS (needs write:vm)."""
    with connected() as client:
        target = client.vps.get(vps)
        state = client.schedules.set(target, interval_hours=hours, enabled=not disable)
    _show(target.name, state)


@group.command("delete")
@vps_argument
@yes_option
@connection_options
def delete(vps: str, yes: bool) -> None:
    """Remove the schedule of a VPS (asks first unless --yes); its snapshots are kept and
    expire as usual."""
    with connected() as client:
        target = client.vps.get(vps)
        question = f"Remove the snapshot schedule of {target.name}? Its snapshots are kept."
        if not confirm(question, yes=yes):
            raise refused("schedule removal")
        client.schedules.delete(target)
    if not print_result({"vpsId": target.id, "schedule": None}):
        say(f"removed the schedule of {target.name} (its snapshots are kept)")
