"""The ``vpsnap`` console script: the root group and its table of lazily loaded commands."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from vpsnap import __version__
from vpsnap.cli.lazy import Lazy, LazyGroup
from vpsnap.cli.state import connection_options, store_option

_C = "vpsnap.cli.commands."

# name → where it lives. Client groups need only the SDK; server ones need vpsnap[server].
COMMANDS = {
    "vps": Lazy(_C + "vps", "Your VPSes: list, show, power actions, snapshot slots."),
    "snapshots": Lazy(_C + "snapshots", "Snapshots of a VPS: list, create, restore, delete."),
    "schedules": Lazy(_C + "schedules", "A VPS's snapshot schedule: show, set, delete."),
    "jobs": Lazy(_C + "jobs", "Jobs: list, show, wait for one to finish."),
    "webhooks": Lazy(_C + "webhooks", "Webhook endpoints: create, test, deliveries, delete."),
    "audit": Lazy(_C + "audit", "The account's audit trail: who did what, when."),
    "context": Lazy(_C + "context", "Named connections (URL and key): create, use, list."),
    "version": Lazy(_C + "version", "Client and server versions.", "command"),
    "completion": Lazy(_C + "completion", "Shell completion script (bash, zsh, fish).", "command"),
    "serve": Lazy(_C + "serve", "Run the server (API, worker, scheduler).", "command", server=True),
    "api": Lazy(_C + "processes", "Scale-out: the HTTP API alone.", "api", server=True),
    "agent": Lazy(
        _C + "processes", "Scale-out: one hypervisor host's agent.", "agent", server=True
    ),
    "scheduler": Lazy(
        _C + "processes", "Scale-out: the scheduler (one active).", "scheduler", server=True
    ),
    "migrate": Lazy(_C + "processes", "Apply database migrations.", "migrate", server=True),
    "admin": Lazy(_C + "admin", "Operator administration, on the database.", server=True),
}


@click.group(
    cls=LazyGroup,
    lazy=COMMANDS,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
    no_args_is_help=True,
)
@click.version_option(__version__, "--version", "-V", prog_name="vpsnap")
@connection_options
@click.option(
    "--config",
    "settings_file",
    type=click.Path(path_type=Path, dir_okay=False),
    callback=store_option,
    expose_value=False,
    help="Server settings file (TOML) for serve, the scale-out processes and admin (default "
    "$VPSNAP_SETTINGS_FILE, then /etc/vpsnap/vpsnap.toml if it exists); flags and VPSNAP_* win.",
)
def cli() -> None:
    """vpsnap: VPS snapshots from the command line.

    Connect once with `vpsnap context create NAME --url URL` (the key is asked for and
    stored in ~/.config/vpsnap/config.toml, mode 0600); then `vpsnap vps list`.
    Options given before the subcommand (-o, --context, --url, --api-key) apply to it.
    """


def main() -> None:
    # httpx imports its own command line (click, and rich's console, progress and syntax with
    # pygments) whenever those are installed, as they are here; that costs more than the rest
    # of httpx, and vpsnap never runs it. Blocking the import takes the path httpx itself takes
    # without its `cli` extra (its `httpx.main` then only says what to install).
    sys.modules.setdefault("httpx._main", None)  # type: ignore[arg-type]
    cli(prog_name="vpsnap")


if __name__ == "__main__":  # pragma: no cover - `python -m vpsnap.cli.entry`
    main()
