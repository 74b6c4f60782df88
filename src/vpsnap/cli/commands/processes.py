"""The scale-out processes (docs/scale-out.md): ``vpsnap api``, ``vpsnap agent``,
``vpsnap scheduler`` and ``vpsnap migrate``. Each runs on PostgreSQL (``VPSNAP_DATABASE_URL``)
and, but for ``migrate``, refuses a schema other than its own."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import TYPE_CHECKING

import click

from vpsnap.logging import LOG_FORMATS

if TYPE_CHECKING:
    from vpsnap.settings import Settings

_log_format = click.option(
    "--log-format",
    type=click.Choice(LOG_FORMATS),
    help="Logs on stderr: console lines on a terminal and JSON otherwise (auto), or as asked.",
)
_health_port = click.option(
    "--health-port",
    type=click.IntRange(0, 65535),
    help="Serve /healthz and /readyz on VPSNAP_HOST (127.0.0.1) at this port "
    "(env VPSNAP_HEALTH_PORT; default: none).",
)
_database = click.option(
    "--database-url",
    help="postgresql+asyncpg://… (env VPSNAP_DATABASE_URL); the same for every process.",
)


def _run(settings: Settings, main: object) -> None:
    from vpsnap.cli.commands.admin.common import fail  # noqa: PLC0415
    from vpsnap.cli.processes import run_event_loop  # noqa: PLC0415
    from vpsnap.domain.errors import DomainError  # noqa: PLC0415

    try:
        run_event_loop(main)  # type: ignore[arg-type]
    except DomainError as exc:
        raise fail(exc) from None
    except KeyboardInterrupt:
        pass


@click.command("api")
@click.option("--host", help="Address to listen on (env VPSNAP_HOST; default 127.0.0.1).")
@click.option("--port", type=click.IntRange(0, 65535), help="Port (env VPSNAP_PORT; default 8080).")
@click.option(
    "--forwarded-allow-ips",
    help="The load balancer's addresses, whose X-Forwarded-For/-Proto are believed "
    "(env VPSNAP_FORWARDED_ALLOW_IPS).",
)
@_database
@_log_format
def api(
    host: str | None,
    port: int | None,
    forwarded_allow_ips: str | None,
    database_url: str | None,
    log_format: str | None,
) -> None:
    """The HTTP API alone: stateless, any number behind a load balancer; it never runs a
    hypervisor command and needs no data dir with disks. Needs PostgreSQL (and Redis for
    shared rate limits: VPSNAP_RATE_LIMIT_STORAGE)."""
    from vpsnap.cli.heap import collector_paused  # noqa: PLC0415

    # As `vpsnap serve`: no cyclic collection while the server starts (cli/heap.py).
    with collector_paused():
        from vpsnap.cli.commands.admin.common import load_settings  # noqa: PLC0415
        from vpsnap.cli.scaleout import run_api  # noqa: PLC0415

        settings = load_settings(
            host=host,
            port=port,
            forwarded_allow_ips=forwarded_allow_ips,
            database_url=database_url,
            log_format=log_format,
        )
        _run(settings, run_api(settings))


@click.command("agent")
@click.option("--node", help="The hypervisor node this host is (env VPSNAP_NODE).")
@click.option(
    "--data-dir",
    type=click.Path(path_type=Path, file_okay=False),
    help="Where managed VMs keep their sockets (env VPSNAP_DATA_DIR; default ./var).",
)
@_health_port
@_database
@_log_format
def agent(
    node: str | None,
    data_dir: Path | None,
    health_port: int | None,
    database_url: str | None,
    log_format: str | None,
) -> None:
    """One hypervisor host's agent: runs its node's jobs, reconciles its disks, runs its
    managed VMs, and publishes heartbeats and power states. One agent per node (a second
    is refused). Needs only PostgreSQL of the control plane."""
    from vpsnap.cli.commands.admin.common import load_settings  # noqa: PLC0415
    from vpsnap.cli.scaleout import run_agent  # noqa: PLC0415

    settings = load_settings(
        node=node,
        data_dir=data_dir,
        health_port=health_port,
        database_url=database_url,
        log_format=log_format,
    )
    _run(settings, run_agent(settings))


@click.command("scheduler")
@_health_port
@_database
@_log_format
def scheduler(health_port: int | None, database_url: str | None, log_format: str | None) -> None:
    """Retention sweep, schedule runs, housekeeping and the lease reaper. Run several: one is
    active (a PostgreSQL advisory lock), the others stand by and take over within seconds."""
    from vpsnap.cli.commands.admin.common import load_settings  # noqa: PLC0415
    from vpsnap.cli.scaleout import run_scheduler  # noqa: PLC0415

    settings = load_settings(
        health_port=health_port, database_url=database_url, log_format=log_format
    )
    _run(settings, run_scheduler(settings))


@click.command("migrate")
@_database
@click.option(
    "--data-dir",
    type=click.Path(path_type=Path, file_okay=False),
    help="Data directory of an embedded (SQLite) deployment (env VPSNAP_DATA_DIR).",
)
def migrate(database_url: str | None, data_dir: Path | None) -> None:
    """Bring the database to this vpsnap's schema, once, before (re)starting the processes
    (`serve` does it by itself; api, agent and scheduler refuse another schema)."""
    from vpsnap.cli.commands.admin.common import load_settings  # noqa: PLC0415
    from vpsnap.cli.scaleout import run_migrate  # noqa: PLC0415
    from vpsnap.domain.errors import DomainError  # noqa: PLC0415

    settings = load_settings(database_url=database_url, data_dir=data_dir)
    try:
        before, after = asyncio.run(run_migrate(settings))
    except DomainError as exc:
        from vpsnap.cli.commands.admin.common import fail  # noqa: PLC0415

        raise fail(exc) from None
    if before == after:
        click.echo(f"the database is at {after} already")
    else:
        click.echo(f"migrated the database from {before or 'empty'} to {after}")
