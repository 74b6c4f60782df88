"""Options every client command shares (given before or after the subcommand), and the one
place that decides which URL and key a command uses.

Precedence, for the URL and for the key separately: a flag (``--url``, ``--api-key``) > the
environment (``VPSNAP_URL``, ``VPSNAP_API_KEY``) > the context (``--context``, else
``VPSNAP_CONTEXT``, else the active one of ``vpsnap context use``) > the default URL.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from vpsnap.cli import config
from vpsnap.cli.exit_codes import ExitCode

if TYPE_CHECKING:
    from vpsnap.client import Client

F = TypeVar("F", bound=Callable[..., Any])

DEFAULT_URL = "http://127.0.0.1:8080"  # where `vpsnap serve` listens (vpsnap.client.DEFAULT_URL)
URL_ENV = "VPSNAP_URL"
API_KEY_ENV = "VPSNAP_API_KEY"
OUTPUTS = ("table", "json", "yaml")


class UsageProblem(click.ClickException):
    """A problem with what the user gave (exit 2), said in the CLI's words."""

    exit_code = ExitCode.USAGE

    def show(self, file: Any = None) -> None:
        click.echo(f"error: {self.format_message()}", err=True)


@dataclass
class CliState:
    url: str | None = None
    api_key: str | None = None
    context: str | None = None
    output: str | None = None
    no_header: bool = False
    columns: str | None = None
    wide: bool = False
    settings_file: Path | None = None
    """The server's settings file (``vpsnap --config FILE serve|admin …``; docs/operations.md)."""

    @property
    def format(self) -> str:
        return self.output or "table"

    def context_name(self) -> tuple[str | None, bool]:
        """The context to use and whether it was asked for (flag or environment)."""
        if self.context:
            return self.context, True
        if os.environ.get(config.CONTEXT_ENV):
            return os.environ[config.CONTEXT_ENV], True
        return None, False

    def connection(self) -> tuple[str, str]:
        """(URL, key) by the precedence above; ``UsageProblem`` when there is no key."""
        url = self.url or os.environ.get(URL_ENV)
        key = self.api_key or os.environ.get(API_KEY_ENV)
        if url is None or key is None:
            chosen = self.chosen_context()
            if chosen is not None:
                url = url or chosen.url
                key = key or chosen.api_key
        if not key:
            raise UsageProblem(
                "no API key: create a context (vpsnap context create NAME --url URL), "
                f"set {API_KEY_ENV}, or pass --api-key"
            )
        return url or DEFAULT_URL, key

    def chosen_context(self) -> config.Context | None:
        name, explicit = self.context_name()
        try:
            loaded = config.load(config.config_path())
        except config.ConfigError as exc:
            raise UsageProblem(str(exc)) from None
        name = name or loaded.active
        if name is None:
            return None
        found = loaded.find(name)
        if found is None and (explicit or loaded.active):
            source = "--context" if self.context else config.CONTEXT_ENV
            source = source if explicit else "the active context"
            raise UsageProblem(f"there is no context {name!r} ({source}); see vpsnap context list")
        return found


def state() -> CliState:
    """The state of the command being run (one per invocation)."""
    return click.get_current_context().ensure_object(CliState)


def _store(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
    # A command's own option beats the same option given before the subcommand.
    if value is not None and value is not False and param.name is not None:
        setattr(ctx.ensure_object(CliState), param.name, value)
    return value


store_option = _store
"""Click callback that keeps an option's value in the invocation's ``CliState``."""


def connection_options(function: F) -> F:
    """``--context``, ``--url``, ``--api-key`` and ``-o``, accepted on the root and on every
    client command."""
    options = [
        click.option(
            "-o",
            "--output",
            type=click.Choice(OUTPUTS),
            callback=_store,
            expose_value=False,
            help="table (default) for people; json or yaml for scripts.",
        ),
        click.option(
            "--context",
            metavar="NAME",
            callback=_store,
            expose_value=False,
            help=f"Use this context (default: ${config.CONTEXT_ENV}, then the active one).",
        ),
        click.option(
            "--url",
            metavar="URL",
            callback=_store,
            expose_value=False,
            help=f"API base URL (beats ${URL_ENV} and the context).",
        ),
        click.option(
            "--api-key",
            metavar="KEY",
            callback=_store,
            expose_value=False,
            help=f"API key (beats ${API_KEY_ENV} and the context; visible in ps and history: "
            "prefer a context).",
        ),
    ]
    for option in reversed(options):
        function = option(function)
    return function


def output_option(function: F) -> F:
    """``-o`` alone, for commands that take no connection options."""
    return click.option(
        "-o",
        "--output",
        type=click.Choice(OUTPUTS),
        callback=_store,
        expose_value=False,
        help="table (default) for people; json or yaml for scripts.",
    )(function)


def page_options(
    cursor_help: str = "Continue after a previous page (printed when there are more).",
) -> Callable[[F], F]:
    """``--limit`` (default 20, newest first) and ``--cursor`` of the commands that list a
    cursor-paginated collection; both are passed to the command as ``limit`` and ``cursor``."""

    def decorate(function: F) -> F:
        function = click.option("--cursor", help=cursor_help)(function)
        return click.option(
            "--limit",
            type=click.IntRange(min=1),
            default=20,
            show_default=True,
            help="Show at most this many (newest first).",
        )(function)

    return decorate


def listing_options(function: F) -> F:
    """``--no-header``, ``--columns``, ``--wide`` of every read command."""
    options = [
        click.option(
            "--no-header",
            is_flag=True,
            default=False,
            callback=_store,
            expose_value=False,
            help="Table rows only (for scripts).",
        ),
        click.option(
            "--columns",
            metavar="A,B,…",
            callback=_store,
            expose_value=False,
            help="Only these table columns, in this order (see the column names in --help).",
        ),
        click.option(
            "--wide",
            is_flag=True,
            default=False,
            callback=_store,
            expose_value=False,
            help="Every column.",
        ),
    ]
    for option in reversed(options):
        function = option(function)
    return function


def yes_option(function: F) -> F:
    return click.option(
        "-y", "--yes", is_flag=True, default=False, help="Do not ask for confirmation."
    )(function)


@contextmanager
def connected() -> Iterator[Client]:
    """A client for this command; any SDK error becomes one reported line and its exit code."""
    from vpsnap.cli.output import report_error  # noqa: PLC0415 - keeps --help light
    from vpsnap.client import Client, ConnectionFailed, VpsnapError  # noqa: PLC0415

    current = state()
    url, key = current.connection()
    try:
        with Client(url, key) as client:
            try:
                yield client
            except ConnectionFailed as exc:
                exc.detail += (
                    f" (is vpsnap running at {client.url}? see --url, {URL_ENV}, "
                    "or vpsnap context list)"
                )
                raise
    except VpsnapError as exc:
        from vpsnap.cli.exit_codes import exit_code_for  # noqa: PLC0415

        report_error(exc, current.format)
        raise SystemExit(exit_code_for(exc)) from None
