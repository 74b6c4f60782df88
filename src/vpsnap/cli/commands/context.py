"""``vpsnap context``: named connections (a URL and an API key), as ``hcloud context`` keeps
them, in ``~/.config/vpsnap/config.toml`` (mode 0600). The key never goes on the command line:
it is read from a hidden prompt, or from stdin when stdin is not a terminal."""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path

import click

from vpsnap.cli import config
from vpsnap.cli.output import Column, field, print_result, say, show
from vpsnap.cli.state import UsageProblem, listing_options, output_option, state

CONTEXT_COLUMNS = (
    Column("active", field("active", "")),
    Column("name", field("name")),
    Column("url", field("url")),
)


def _load() -> tuple[config.Config, Path]:
    path = config.config_path()
    try:
        return config.load(path), path
    except config.ConfigError as exc:
        raise UsageProblem(str(exc)) from None


def _complete_context(
    ctx: click.Context, param: click.Parameter, incomplete: str
) -> list[click.shell_completion.CompletionItem]:
    try:
        loaded = config.load(config.config_path())
    except config.ConfigError:
        return []
    return [
        click.shell_completion.CompletionItem(c.name, help=c.url)
        for c in loaded.contexts
        if c.name.startswith(incomplete)
    ]


name_argument = click.argument("name", shell_complete=_complete_context)


@click.group(no_args_is_help=True)
def group() -> None:
    """Named connections: a URL and an API key each; one is active.

    Which URL and key a command uses, for each separately: the flag (--url, --api-key), else
    VPSNAP_URL / VPSNAP_API_KEY, else the context (--context, else VPSNAP_CONTEXT, else the
    active one), else http://127.0.0.1:8080.
    """


def _read_key() -> str:
    if sys.stdin.isatty():
        return str(click.prompt("API key", hide_input=True, err=True)).strip()
    return sys.stdin.readline().strip()


@group.command("create")
@name_argument
@click.option("--url", required=True, metavar="URL", help="The server's base URL.")
@click.option(
    "--verify/--no-verify",
    default=True,
    show_default=True,
    help="Check URL and key with the server before saving.",
)
@click.option("--use/--no-use", default=True, show_default=True, help="Make it the active one.")
@click.option(
    "--replace", is_flag=True, default=False, help="Replace a context of that name, if any."
)
@output_option
def create(name: str, url: str, verify: bool, use: bool, replace: bool) -> None:
    """Save a context. The key is asked for (hidden), or read from stdin:
    `vpsnap context create demo --url http://127.0.0.1:8080 < key-file`."""
    loaded, path = _load()
    if loaded.find(name) is not None and not replace:
        raise UsageProblem(
            f"there is a context {name!r} already: pick another name, or --replace it"
        )
    key = _read_key()
    from vpsnap.client import ConfigurationError, Forbidden  # noqa: PLC0415
    from vpsnap.client.client import check_api_key, check_url  # noqa: PLC0415

    if not key:
        raise UsageProblem("no API key given (type it at the prompt, or pipe it on stdin)")
    try:
        check_api_key(key)
        url = check_url(url)
    except ConfigurationError as exc:
        raise UsageProblem(str(exc)) from None
    if verify:
        current = state()
        current.url, current.api_key = url, key
        from vpsnap.cli.state import connected  # noqa: PLC0415

        # Any read proves URL and key; a key without read:vm answers 403, not 401: it is valid.
        with connected() as client, contextlib.suppress(Forbidden):
            next(iter(client.vps.list(limit=1)), None)
    loaded.contexts = [c for c in loaded.contexts if c.name != name]
    loaded.contexts.append(config.Context(name, url, key))
    if use or loaded.active is None:
        loaded.active = name
    config.save(path, loaded)
    if not print_result({"name": name, "url": url, "active": loaded.active == name}):
        say(f"context {name} saved in {path}" + (" and active" if loaded.active == name else ""))


@group.command("use")
@name_argument
@output_option
def use(name: str) -> None:
    """Make a context the active one."""
    loaded, path = _load()
    if loaded.find(name) is None:
        raise UsageProblem(f"there is no context {name!r}; see vpsnap context list")
    loaded.active = name
    config.save(path, loaded)
    if not print_result({"active": name}):
        say(f"active context: {name}")


@group.command("list")
@output_option
@listing_options
def list_() -> None:
    """Every context (never its key); * marks the active one."""
    loaded, _ = _load()
    rows = [
        {"name": c.name, "url": c.url, "active": "*" if c.name == loaded.active else ""}
        for c in loaded.contexts
    ]
    document = {
        "active": loaded.active,
        "contexts": [{"name": c.name, "url": c.url} for c in loaded.contexts],
    }
    show(document, rows, CONTEXT_COLUMNS)


@group.command("active")
@output_option
def active() -> None:
    """The name of the context in use (--context, VPSNAP_CONTEXT, or the active one)."""
    loaded, _ = _load()
    name, _ = state().context_name()
    name = name or loaded.active
    if name is None:
        raise UsageProblem("no context is active; see vpsnap context create")
    if not print_result({"active": name}):
        click.echo(name)


@group.command("delete")
@name_argument
@output_option
def delete(name: str) -> None:
    """Forget a context (and its key)."""
    loaded, path = _load()
    if loaded.find(name) is None:
        raise UsageProblem(f"there is no context {name!r}; see vpsnap context list")
    loaded.contexts = [c for c in loaded.contexts if c.name != name]
    if loaded.active == name:
        loaded.active = None
    config.save(path, loaded)
    if not print_result({"deleted": name}):
        say(f"deleted context {name}")
