"""``vpsnap snapshots``: list, create (making room if asked), restore and delete snapshots."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import click

from vpsnap.cli.complete import complete_snapshot, complete_vps
from vpsnap.cli.output import (
    Column,
    confirm,
    field,
    print_document,
    print_queued,
    print_result,
    refused,
    relative,
    say,
    show,
    when,
)
from vpsnap.cli.progress import Progress
from vpsnap.cli.state import connected, connection_options, listing_options, state, yes_option

if TYPE_CHECKING:
    from vpsnap.client import Gate, Step

SNAPSHOT_COLUMNS = (
    Column("name", field("name")),
    Column("status", field("status")),
    Column("created", when("createdAt")),
    Column("expires", when("expiresAt")),
    Column("consistency", field("consistency")),
    Column("origin", field("origin")),
    Column("parent", field("parentName")),
    Column("description", field("description", "")),
    Column("created_at", field("createdAt"), wide=True),
    Column("expires_at", field("expiresAt"), wide=True),
)

vps_argument = click.argument("vps", metavar="VPS", shell_complete=complete_vps)
name_argument = click.argument("name", metavar="NAME", shell_complete=complete_snapshot)
no_wait_option = click.option(
    "--no-wait", is_flag=True, default=False, help="Return once the job is queued; print its id."
)
timeout_option = click.option(
    "--timeout",
    type=click.FloatRange(min=0),
    default=600.0,
    show_default=True,
    help="Seconds to wait for the job(s).",
)
MAKE_ROOM = ("fail", "delete-oldest", "buy-slot")


@click.group(no_args_is_help=True)
def group() -> None:
    """Snapshots of a VPS (VPS is an id, a name or a primary IP)."""


def _gate(label: str, gate: Gate) -> str:
    if gate.allowed:
        return f"{label}: yes"
    return f"{label}: no ({gate.code}) {gate.reason or ''}".rstrip()


@group.command("list")
@vps_argument
@connection_options
@listing_options
def list_(vps: str) -> None:
    """A VPS's snapshots (oldest first), its slots, and whether create/restore are allowed.

    Columns: name, status, created, expires, consistency, origin, parent, description; with
    --wide also created_at, expires_at (ISO timestamps).
    """
    with connected() as client:
        target = client.vps.get(vps)
        listing = client.snapshots.list(target)
    limits = listing.limits
    show(
        dict(listing.raw),
        [s.raw for s in listing.snapshots],
        SNAPSHOT_COLUMNS,
        title=f"{target.name}: {limits.used_snapshots} of {limits.total_snapshots} "
        "snapshot slots used",
        footer=[
            _gate("create", listing.actions.can_create),
            _gate("restore", listing.actions.can_restore),
        ],
    )


@group.command("create")
@vps_argument
@name_argument
@click.option("-d", "--description", help="Up to 255 characters.")
@click.option("--memory", is_flag=True, default=False, help="Include RAM state (running VPS).")
@click.option(
    "--make-room",
    type=click.Choice(MAKE_ROOM),
    default="fail",
    show_default=True,
    help="When every slot is used: fail (and say what to do), delete the oldest available "
    "snapshot, or buy one more slot (billed). Both ask first unless --yes.",
)
@yes_option
@no_wait_option
@timeout_option
@connection_options
def create(
    vps: str,
    name: str,
    description: str | None,
    memory: bool,
    make_room: str,
    yes: bool,
    no_wait: bool,
    timeout: float,
) -> None:
    """Take a snapshot the safe way: check slots and gates, make room if asked, create, wait."""
    from vpsnap.client import CannotMakeRoom  # noqa: PLC0415 - keeps `snapshots --help` light

    steps: list[Step] = []
    with connected() as client, Progress(f"snapshot {name!r} of {vps}: checking slots") as progress:

        def on_step(step: Step) -> None:
            steps.append(step)
            progress.update(step.message)

        def ask(step: Step) -> bool:
            # The spinner would draw over the question: stop it while asking.
            progress.__exit__(None, None, None)
            try:
                return confirm(f"{step.message[0].upper()}{step.message[1:]}?", yes=yes)
            finally:
                progress.__enter__()

        try:
            snapshot = client.snapshots.create_safely(
                vps,
                name,
                description=description,
                include_memory_state=memory,
                make_room=make_room,  # type: ignore[arg-type] # checked by click.Choice
                wait=not no_wait,
                timeout=timeout,
                on_step=on_step,
                confirm=ask,
            )
        except CannotMakeRoom as exc:
            if exc.reason_code == "declined":
                raise refused("create") from None
            raise
    if state().format != "table":
        print_document(
            {
                "snapshot": dict(snapshot.raw),
                "jobId": snapshot.job_id,
                "steps": [{"action": s.action, "message": s.message} for s in steps],
            }
        )
        return
    click.echo(
        f"snapshot {snapshot.name!r} of {vps}: {snapshot.status}, expires "
        f"{relative(snapshot.expires_at)} ({snapshot.expires_at:%Y-%m-%d %H:%M} UTC)"
    )
    if no_wait:
        click.echo(f"follow it with: vpsnap jobs wait {snapshot.job_id}")


@group.command("restore")
@vps_argument
@name_argument
@yes_option
@no_wait_option
@timeout_option
@connection_options
def restore(vps: str, name: str, yes: bool, no_wait: bool, timeout: float) -> None:
    """Roll a VPS's disks back to a snapshot. Destructive: asks first unless --yes."""
    with connected() as client:
        target = client.vps.get(vps)
        snapshot = client.snapshots.get(target, name)
        question = (
            f"Roll {target.name} back to snapshot {snapshot.name!r}, taken "
            f"{relative(snapshot.created_at)}? Everything written to its disks since then is lost."
        )
        if not confirm(question, yes=yes):
            raise refused("restore")
        with Progress(f"restoring {target.name} to {snapshot.name!r}") as progress:
            operation = client.snapshots.restore(target, snapshot.name)
            job = None if no_wait else operation.wait(timeout=timeout, on_progress=progress.job)
    if job is None:
        print_queued(operation)
        return
    if not print_result(job.raw):
        result: dict[str, Any] = dict(job.result or {})
        click.echo(
            f"restored {target.name} to snapshot {snapshot.name!r} "
            f"(power: {result.get('powerStateBefore', '?')} → "
            f"{result.get('powerStateAfter', '?')})"
        )


@group.command("delete")
@vps_argument
@name_argument
@yes_option
@no_wait_option
@timeout_option
@connection_options
def delete(vps: str, name: str, yes: bool, no_wait: bool, timeout: float) -> None:
    """Delete a snapshot (asks first unless --yes); its slot is free at once."""
    with connected() as client:
        target = client.vps.get(vps)
        snapshot = client.snapshots.get(target, name)
        question = (
            f"Delete snapshot {snapshot.name!r} of {target.name}, taken "
            f"{relative(snapshot.created_at)}? It cannot be restored afterwards."
        )
        if not confirm(question, yes=yes):
            raise refused("delete")
        with Progress(f"deleting snapshot {snapshot.name!r} of {target.name}") as progress:
            operation = client.snapshots.delete(target, snapshot.name)
            job = None if no_wait else operation.wait(timeout=timeout, on_progress=progress.job)
    if job is None:
        print_queued(operation)
        return
    if not print_result(job.raw):
        say(f"deleted snapshot {snapshot.name!r} of {target.name}")
