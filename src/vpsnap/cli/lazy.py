"""``LazyGroup``: a click group whose commands live in modules imported on first use."""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:
    from click.shell_completion import CompletionItem

# One module of each kind the server cannot start without.
SERVER_MODULES = ("fastapi", "sqlalchemy", "uvicorn", "pydantic_settings")
SERVER_HINT = "this needs the vpsnap server: pip install 'vpsnap[server]'"


def server_installed() -> bool:
    return all(importlib.util.find_spec(name) is not None for name in SERVER_MODULES)


@dataclass(frozen=True, slots=True)
class Lazy:
    """A command defined as ``attribute`` in ``module``, with its one-line help (shown by
    ``--help`` and completion without importing the module)."""

    module: str
    help: str
    attribute: str = "group"
    server: bool = False
    """Needs ``vpsnap[server]``: without it the command only says what to install."""


class LazyGroup(click.Group):
    """A group of eager commands plus ``lazy`` ones, imported when invoked or completed."""

    def __init__(self, *args: Any, lazy: Mapping[str, Lazy] | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lazy: dict[str, Lazy] = dict(lazy or {})

    def list_commands(self, ctx: click.Context) -> list[str]:
        # The table's order (most used first), then any eager command.
        return [*self.lazy, *sorted(set(self.commands) - set(self.lazy))]

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in self.commands:
            return self.commands[cmd_name]
        entry = self.lazy.get(cmd_name)
        if entry is None:
            return None
        command = (
            _needs_server(cmd_name, entry) if entry.server and not server_installed() else None
        )
        if command is None:
            command = getattr(importlib.import_module(entry.module), entry.attribute)
            assert isinstance(command, click.Command), entry
        self.commands[cmd_name] = command
        return command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = []
        for name in self.list_commands(ctx):
            if name in self.lazy and name not in self.commands:
                rows.append((name, self.lazy[name].help))
                continue
            command = self.get_command(ctx, name)
            if command is not None and not command.hidden:
                rows.append((name, command.get_short_help_str(formatter.width - 6 - len(name))))
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)

    def shell_complete(self, ctx: click.Context, incomplete: str) -> list[CompletionItem]:
        # Command names with their help from the table: completing `vpsnap <TAB>` imports
        # nothing.
        from click.shell_completion import CompletionItem  # noqa: PLC0415

        items = [
            CompletionItem(name, help=self.lazy[name].help if name in self.lazy else None)
            for name in self.list_commands(ctx)
            if name.startswith(incomplete)
        ]
        items.extend(click.Command.shell_complete(self, ctx, incomplete))
        return items


def _needs_server(name: str, entry: Lazy) -> click.Command:
    hint = SERVER_HINT

    @click.command(
        name,
        help=f"{entry.help} ({hint}).",
        context_settings={"ignore_unknown_options": True, "allow_extra_args": True},
        add_help_option=False,
    )
    def refuse() -> None:
        click.echo(f"error: {hint}", err=True)
        raise SystemExit(1)

    return refuse
