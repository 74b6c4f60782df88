"""``vpsnap admin demo reset``: the demo VPSes as ``serve --demo`` first made them."""

from __future__ import annotations

import asyncio
import fcntl
import time
from pathlib import Path

import click

from vpsnap.cli.commands.admin.common import admin_options, fail, load_settings
from vpsnap.cli.output import print_result
from vpsnap.demo import DemoReset, reset_demo
from vpsnap.domain.errors import DomainError
from vpsnap.runtime import Role, Runtime
from vpsnap.settings import Settings


@click.group(no_args_is_help=True)
def group() -> None:
    """The demo data of `vpsnap serve --demo`."""


def server_running(settings: Settings) -> bool:
    """Whether a server holds the data dir's lock (it then runs the queued jobs)."""
    path = settings.data_dir / "vpsnap.lock"
    if not path.exists():
        return False
    with path.open("a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(handle, fcntl.LOCK_UN)
    return False


async def _wait_for(runtime: Runtime, reset: DemoReset, timeout: float) -> list[str]:
    """The ids of the deletions not finished within ``timeout`` (none: all done)."""
    deadline = time.monotonic() + timeout
    pending = [job.id for job in reset.deletions]
    while pending and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
        async with runtime.store.transaction(read_only=True) as tx:
            jobs = [await tx.get_job(job_id) for job_id in pending]
        pending = [j.id for j in jobs if j is not None and not j.status.is_terminal]
    return pending


@group.command("reset")
@click.option(
    "--timeout",
    type=click.FloatRange(min=0),
    default=120.0,
    show_default=True,
    help="Seconds to wait for the snapshot deletions.",
)
@admin_options
def reset(timeout: float, data_dir: Path | None) -> None:
    """Delete every demo snapshot (through jobs, as the API would), remove demo schedules,
    and set the demo slots back (demo-web 3, demo-db 1, demo-nosnap 0, other-web 2). Disk
    contents stay. With a server running it does the deletions; without one, this command
    runs them itself."""
    settings = load_settings(data_dir=data_dir)
    running = server_running(settings)

    async def main() -> tuple[DemoReset, list[str]]:
        # With a server running, it is the node's agent (and runs the deletions); without one,
        # this process is, embedded, for as long as the deletions take.
        runtime = Runtime.build(settings, role=Role.ADMIN if running else Role.EMBEDDED)
        if running:
            try:
                await runtime.prepare()
                done = await reset_demo(runtime)
                return done, await _wait_for(runtime, done, timeout)
            finally:
                await runtime.close()
        # No server: run worker and scheduler here while the deletions run (closes itself).
        async with runtime.embedded():
            done = await reset_demo(runtime)
            return done, await _wait_for(runtime, done, timeout)

    try:
        done, unfinished = asyncio.run(main())
    except DomainError as exc:
        raise fail(exc) from None
    document = {
        "deletedSnapshots": [
            {"vpsId": j.vps_id, "name": j.snapshot_name, "jobId": j.id} for j in done.deletions
        ],
        "slotsRestored": list(done.slots_restored),
        "schedulesRemoved": list(done.schedules_removed),
        "unfinishedJobs": unfinished,
    }
    if not print_result(document):
        click.echo(
            f"demo reset: {len(done.deletions)} snapshot(s) deleted, slots restored on "
            f"{', '.join(done.slots_restored) or 'none'}, schedules removed on "
            f"{', '.join(done.schedules_removed) or 'none'}"
        )
    if unfinished:
        click.echo(
            f"error: {len(unfinished)} deletion(s) still running after {timeout:g} s: "
            f"{', '.join(unfinished)}",
            err=True,
        )
        raise SystemExit(8)
