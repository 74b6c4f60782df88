"""``vpsnap version``: the client's version and, when it answers, the server's."""

from __future__ import annotations

import click

from vpsnap import __version__
from vpsnap.cli.output import print_result
from vpsnap.cli.state import DEFAULT_URL, URL_ENV, UsageProblem, connection_options, state


@click.command("version")
@connection_options
def command() -> None:
    """Print the client's version and the server's (GET /api/version, no key needed)."""
    from vpsnap.client import NO_RETRIES, Client, VpsnapError  # noqa: PLC0415

    current = state()
    try:
        url, key = current.connection()
    except UsageProblem:
        # The version needs no key: still ask the server the user points at.
        import os  # noqa: PLC0415

        url, key = current.url or os.environ.get(URL_ENV) or DEFAULT_URL, "none"
    server: dict[str, object] = {"url": url}
    try:
        with Client(url, key, timeout=5, retry=NO_RETRIES) as client:
            answer = client.server_version()
        server["version"] = answer.version
    except VpsnapError as exc:
        server["error"] = exc.detail
    if not print_result({"client": {"version": __version__}, "server": server}):
        click.echo(f"client: vpsnap {__version__}")
        if "version" in server:
            click.echo(f"server: vpsnap {server['version']} at {url}")
        else:
            click.echo(f"server: unreachable at {url} ({server['error']})")
