"""The ``vpsnap`` console script: every command when the server is installed
(``pip install 'vpsnap[server]'``), the client commands alone when only the SDK is
(``pip install vpsnap``), so the client never needs the server's dependencies."""

from __future__ import annotations

import importlib.util

import typer

from vpsnap.cli.client_commands import add_client_commands

# One module of each kind the server cannot start without.
SERVER_MODULES = ("fastapi", "sqlalchemy", "uvicorn", "pydantic_settings")
SERVER_HINT = "this needs the vpsnap server: pip install 'vpsnap[server]'"
_HELP_HINT = SERVER_HINT.replace("[", "\\[")  # help text is Rich markup: keep "[server]"


def server_installed() -> bool:
    return all(importlib.util.find_spec(name) is not None for name in SERVER_MODULES)


def client_only_app() -> typer.Typer:
    app = typer.Typer(help="vpsnap: VPS snapshot control plane (client).", no_args_is_help=True)
    add_client_commands(app)
    passthrough = {"allow_extra_args": True, "ignore_unknown_options": True}

    @app.command(context_settings=passthrough, help=f"Run the server ({_HELP_HINT}).")
    def serve() -> None:
        typer.echo(f"error: {SERVER_HINT}", err=True)
        raise typer.Exit(1)

    @app.command(context_settings=passthrough, help=f"Administration ({_HELP_HINT}).")
    def admin() -> None:
        typer.echo(f"error: {SERVER_HINT}", err=True)
        raise typer.Exit(1)

    return app


def build_app() -> typer.Typer:
    if server_installed():
        from vpsnap.cli.main import app  # noqa: PLC0415 - imports the server's dependencies

        return app
    return client_only_app()


def main() -> None:
    build_app()()


if __name__ == "__main__":  # pragma: no cover - `python -m vpsnap.cli.entry`
    main()
