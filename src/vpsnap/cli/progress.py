"""What is happening while a command waits: a live spinner on a terminal, plain lines on stderr
otherwise (the logs of scripts and CI keep them)."""

from __future__ import annotations

import sys
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

import click

from vpsnap.cli.output import clean

if TYPE_CHECKING:
    from rich.status import Status

    from vpsnap.client import Job


def job_line(job: Job[Any]) -> str:
    subject = f" (snapshot {job.snapshot_name!r})" if job.snapshot_name else ""
    return clean(f"{job.job_id} {job.type}{subject}: {job.status}")


def _markup(message: str) -> str:
    from rich.markup import escape  # noqa: PLC0415

    return escape(clean(message))


class Progress:
    def __init__(self, message: str) -> None:
        self._status: Status | None = None
        if sys.stderr.isatty():
            from rich.console import Console  # noqa: PLC0415

            self._status = Console(stderr=True).status(_markup(message))
        else:
            click.echo(clean(message), err=True)

    def update(self, message: str) -> None:
        if self._status is not None:
            self._status.update(_markup(message))
        else:
            click.echo(clean(message), err=True)

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
