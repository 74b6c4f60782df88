"""What every admin command shares: settings from flags and environment, running a service
call on a runtime, ``--data-dir`` and ``-o``, and domain errors as one line and an exit code."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from vpsnap.cli.exit_codes import ExitCode
from vpsnap.cli.state import OUTPUTS, CliState
from vpsnap.domain.errors import (
    ConfigurationError,
    Conflict,
    DomainError,
    InvalidRequest,
    NotFound,
)
from vpsnap.runtime import Role, Runtime
from vpsnap.settings import Settings
from vpsnap.settings import load_settings as settings_from_file

T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])


def _store_output(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
    if value is not None:
        ctx.ensure_object(CliState).output = value
    return value


def admin_options(function: F) -> F:
    """``--data-dir`` (passed to the command as ``data_dir``) and ``-o``."""
    function = click.option(
        "-o",
        "--output",
        type=click.Choice(OUTPUTS),
        callback=_store_output,
        expose_value=False,
        help="table (default), json or yaml.",
    )(function)
    return click.option(
        "--data-dir",
        type=click.Path(path_type=Path, file_okay=False),
        help="Data directory (env VPSNAP_DATA_DIR; default ./var).",
    )(function)


def load_settings(**overrides: Any) -> Settings:
    """The flags given on the command line, then the environment, then the settings file
    (``vpsnap --config FILE``, ``VPSNAP_SETTINGS_FILE``, ``/etc/vpsnap/vpsnap.toml``)."""
    path = click.get_current_context().ensure_object(CliState).settings_file
    try:
        return settings_from_file(path, **overrides)
    except ConfigurationError as exc:
        raise fail(exc) from None


def exit_code(error: DomainError) -> ExitCode:
    if isinstance(error, NotFound):
        return ExitCode.NOT_FOUND
    if isinstance(error, Conflict):
        return ExitCode.CONFLICT
    if isinstance(error, InvalidRequest):
        return ExitCode.USAGE
    return ExitCode.ERROR


def fail(error: DomainError) -> SystemExit:
    """An admin command's failure: the tenant-facing text, and the operator's account (paths,
    the tool's own words) when the error has one; the admin is the operator."""
    click.echo(f"error: {error.detail} [{error.code}]", err=True)
    if error.log_detail:
        click.echo(f"  {error.log_detail}", err=True)
    return SystemExit(exit_code(error))


def run_admin(settings: Settings, action: Callable[[Runtime], Awaitable[T]]) -> T:
    """Run ``action`` on a runtime of ``settings`` (schema brought up to date first)."""

    async def main() -> T:
        # Not the node's agent: node liveness comes from the agents' heartbeats.
        runtime = Runtime.build(settings, role=Role.ADMIN)
        try:
            await runtime.prepare()
            return await action(runtime)
        finally:
            await runtime.close()

    try:
        return asyncio.run(main())
    except DomainError as exc:
        raise fail(exc) from None


def iso(value: object) -> str | None:
    return value.isoformat().replace("+00:00", "Z") if hasattr(value, "isoformat") else None
