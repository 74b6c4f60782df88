"""The client commands of ``vpsnap`` (``vps``, ``snapshots``, ``jobs``): thin wrappers of the
SDK, for people (tables, a spinner while waiting) and scripts (``--output json``, exit codes).
They need only the SDK's dependencies, never the server's."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from enum import StrEnum
from types import TracebackType
from typing import Annotated, Any, Self

import typer
from rich.markup import escape
from rich.status import Status

from vpsnap.cli.client_output import (
    Output,
    err,
    job_line,
    out,
    print_json,
    relative,
    report_error,
    snapshot_line,
    snapshot_table,
    vps_table,
)
from vpsnap.cli.exit_codes import ExitCode, exit_code_for
from vpsnap.client import Client, ConnectionFailed, Job, Step, VpsnapError
from vpsnap.client.client import API_KEY_ENV, DEFAULT_URL, URL_ENV
from vpsnap.client.jobs import DEFAULT_WAIT_TIMEOUT

vps_app = typer.Typer(help="Your VPSes (through the API).", no_args_is_help=True)
snapshots_app = typer.Typer(
    help="Snapshots of a VPS: list, create (making room if asked), restore, delete.",
    no_args_is_help=True,
)
jobs_app = typer.Typer(help="Jobs: wait for a create, delete or restore to finish.")


def add_client_commands(app: typer.Typer) -> None:
    app.add_typer(vps_app, name="vps")
    app.add_typer(snapshots_app, name="snapshots")
    app.add_typer(jobs_app, name="jobs")


class MakeRoomChoice(StrEnum):
    FAIL = "fail"
    DELETE_OLDEST = "delete-oldest"
    BUY_SLOT = "buy-slot"


UrlOption = Annotated[
    str | None,
    typer.Option("--url", envvar=URL_ENV, help=f"vpsnap API base URL \\[default: {DEFAULT_URL}]"),
]
ApiKeyOption = Annotated[
    str | None, typer.Option("--api-key", envvar=API_KEY_ENV, help="API key.", show_default=False)
]
OutputOption = Annotated[
    Output, typer.Option("--output", "-o", help="table for people, json for scripts.")
]
VpsArgument = Annotated[
    str, typer.Argument(metavar="VPS", help="The VPS: its id, name or primary IP.")
]
NameArgument = Annotated[str, typer.Argument(metavar="NAME", help="The snapshot's name.")]
NoWaitOption = Annotated[
    bool, typer.Option("--no-wait", help="Return once the job is queued; print its id.")
]
TimeoutOption = Annotated[
    float, typer.Option("--timeout", min=0, help="Seconds to wait for the job(s).")
]


@contextmanager
def connected(url: str | None, api_key: str | None, output: Output) -> Iterator[Client]:
    """A client; any SDK error becomes one reported line and its exit code."""
    try:
        with Client(url, api_key) as client:
            try:
                yield client
            except ConnectionFailed as exc:
                exc.detail += f" (is vpsnap running at {client.url}? see --url, {URL_ENV})"
                raise
    except VpsnapError as exc:
        report_error(exc, output)
        raise typer.Exit(exit_code_for(exc)) from None


class Progress:
    """What is happening while the command waits: a live spinner on a terminal, plain lines
    on stderr otherwise (logs of scripts and CI keep them)."""

    def __init__(self, message: str) -> None:
        self._console = err()
        self._status: Status | None = None
        if self._console.is_terminal:
            self._status = self._console.status(escape(message))
        else:
            self._console.print(escape(message))

    def update(self, message: str) -> None:
        if self._status is not None:
            self._status.update(escape(message))
        else:
            self._console.print(escape(message))

    def job(self, job: Job[Any]) -> None:
        self.update(job_line(job))

    def __enter__(self) -> Self:
        if self._status is not None:
            self._status.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._status is not None:
            self._status.stop()


@vps_app.command("list")
def vps_list(
    url: UrlOption = None, api_key: ApiKeyOption = None, output: OutputOption = Output.TABLE
) -> None:
    """Every VPS of your account."""
    with connected(url, api_key, output) as client:
        vpses = client.vps.list()
    if output is Output.JSON:
        print_json({"data": [dict(v.raw) for v in vpses]})
    else:
        out().print(vps_table(vpses))


@snapshots_app.command("list")
def snapshots_list(
    vps: VpsArgument,
    url: UrlOption = None,
    api_key: ApiKeyOption = None,
    output: OutputOption = Output.TABLE,
) -> None:
    """A VPS's snapshots (oldest first), its slots, and whether create/restore are allowed."""
    with connected(url, api_key, output) as client:
        target = client.vps.get(vps)
        listing = client.snapshots.list(target)
    if output is Output.JSON:
        print_json(dict(listing.raw))
    else:
        out().print(snapshot_table(target.name, listing))


@snapshots_app.command("create")
def snapshots_create(
    vps: VpsArgument,
    name: NameArgument,
    description: Annotated[
        str | None, typer.Option("--description", "-d", help="Up to 255 characters.")
    ] = None,
    memory: Annotated[
        bool, typer.Option("--memory", help="Include RAM state (running VPS only).")
    ] = False,
    make_room: Annotated[
        MakeRoomChoice,
        typer.Option(
            "--make-room",
            help="When every slot is used: fail (and say what to do), delete the oldest "
            "available snapshot, or buy one more slot (billed).",
        ),
    ] = MakeRoomChoice.FAIL,
    no_wait: NoWaitOption = False,
    timeout: TimeoutOption = DEFAULT_WAIT_TIMEOUT,
    url: UrlOption = None,
    api_key: ApiKeyOption = None,
    output: OutputOption = Output.TABLE,
) -> None:
    """Take a snapshot the safe way: check slots and gates, make room if asked, create, wait."""
    steps: list[Step] = []
    with (
        connected(url, api_key, output) as client,
        Progress(f"snapshot {name!r} of {vps}: checking slots") as progress,
    ):

        def on_step(step: Step) -> None:
            steps.append(step)
            progress.update(step.message)

        snapshot = client.snapshots.create_safely(
            vps,
            name,
            description=description,
            include_memory_state=memory,
            make_room=make_room.value,
            wait=not no_wait,
            timeout=timeout,
            on_step=on_step,
        )
    if output is Output.JSON:
        print_json(
            {
                "snapshot": dict(snapshot.raw),
                "jobId": snapshot.job_id,
                "steps": [{"action": s.action, "message": s.message} for s in steps],
            }
        )
        return
    out().print(snapshot_line(vps, snapshot))
    if no_wait:
        out().print(f"follow it with: vpsnap jobs wait {snapshot.job_id}")


@snapshots_app.command("restore")
def snapshots_restore(
    vps: VpsArgument,
    name: NameArgument,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    no_wait: NoWaitOption = False,
    timeout: TimeoutOption = DEFAULT_WAIT_TIMEOUT,
    url: UrlOption = None,
    api_key: ApiKeyOption = None,
    output: OutputOption = Output.TABLE,
) -> None:
    """Roll a VPS's disks back to a snapshot. Destructive: asks first unless --yes."""
    with connected(url, api_key, output) as client:
        target = client.vps.get(vps)
        snapshot = client.snapshots.get(target, name)
        if not yes and not _confirm(
            f"Roll {target.name} back to snapshot {snapshot.name!r}, taken "
            f"{relative(snapshot.created_at)}? Everything written to its disks since then "
            "is lost."
        ):
            err().print("restore cancelled: nothing was changed (--yes skips this question)")
            raise typer.Exit(ExitCode.ERROR)
        with Progress(f"restoring {target.name} to {snapshot.name!r}") as progress:
            operation = client.snapshots.restore(target, snapshot.name)
            job = None if no_wait else operation.wait(timeout=timeout, on_progress=progress.job)
    if job is None:
        _print_queued(output, operation.raw, operation.job_id)
    elif output is Output.JSON:
        print_json(dict(job.raw))
    else:
        result = job.result or {}
        out().print(
            f"restored {escape(target.name)} to snapshot {escape(snapshot.name)!r} "
            f"(power: {result.get('powerStateBefore', '?')} → {result.get('powerStateAfter', '?')})"
        )


@snapshots_app.command("delete")
def snapshots_delete(
    vps: VpsArgument,
    name: NameArgument,
    no_wait: NoWaitOption = False,
    timeout: TimeoutOption = DEFAULT_WAIT_TIMEOUT,
    url: UrlOption = None,
    api_key: ApiKeyOption = None,
    output: OutputOption = Output.TABLE,
) -> None:
    """Delete a snapshot; its slot is free at once."""
    with (
        connected(url, api_key, output) as client,
        Progress(f"deleting snapshot {name!r} of {vps}") as progress,
    ):
        operation = client.snapshots.delete(vps, name)
        job = None if no_wait else operation.wait(timeout=timeout, on_progress=progress.job)
    if job is None:
        _print_queued(output, operation.raw, operation.job_id)
    elif output is Output.JSON:
        print_json(dict(job.raw))
    else:
        out().print(f"deleted snapshot {escape(name)!r} of {escape(vps)}")


@jobs_app.command("wait")
def jobs_wait(
    job_id: Annotated[str, typer.Argument(metavar="JOB", help="The job id (job_…).")],
    timeout: TimeoutOption = DEFAULT_WAIT_TIMEOUT,
    url: UrlOption = None,
    api_key: ApiKeyOption = None,
    output: OutputOption = Output.TABLE,
) -> None:
    """Wait until a job ends. Exit 0 when it completed, 7 when it failed, 8 on timeout."""
    with connected(url, api_key, output) as client, Progress(f"waiting for {job_id}") as progress:
        job = client.jobs.wait(job_id, timeout=timeout, on_progress=progress.job)
    if output is Output.JSON:
        print_json(dict(job.raw))
    else:
        out().print(job_line(job))


def _confirm(question: str) -> bool:
    try:
        return typer.confirm(question, default=False, err=True)
    except typer.Abort:  # no answer at all (stdin closed): not a yes
        err().print()  # end the question's line
        return False


def _print_queued(output: Output, raw: Any, job_id: str) -> None:
    if output is Output.JSON:
        print_json(dict(raw))
    else:
        out().print(f"queued: follow it with: vpsnap jobs wait {job_id}")
