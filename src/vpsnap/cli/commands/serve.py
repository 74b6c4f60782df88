"""``vpsnap serve``: the embedded mode (API + worker + scheduler in one process).

The listening socket is bound before anything else happens: on a busy port the command says
so and how to pick another, and has started nothing (no database, no demo VM, no file). The
demo banner is printed only once the server listens.
"""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path
from typing import TYPE_CHECKING

import click

from vpsnap.logging import LOG_FORMATS

if TYPE_CHECKING:
    from vpsnap.settings import Settings


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host:port`` (``OSError`` when it cannot be had)."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    family, _, _, _, address = infos[0]
    from vpsnap.cli.processes import no_nagle  # noqa: PLC0415 - serve's own imports are lazy

    listener = socket.create_server(address[:2], family=family, backlog=2048)
    no_nagle(listener)
    return listener


def _vpsnap_command() -> str:
    """How to run ``vpsnap`` from a shell: its name when it is on ``PATH``, else the path of
    the one beside this interpreter (``./scripts/demo`` runs ``.venv/bin/vpsnap``, which is on
    no ``PATH`` until the venv is activated)."""
    import shutil  # noqa: PLC0415
    import sys  # noqa: PLC0415

    beside = Path(sys.executable).parent / "vpsnap"
    on_path = shutil.which("vpsnap")
    if on_path is not None and Path(on_path).resolve() == beside.resolve():
        return "vpsnap"
    return str(beside) if beside.exists() else "vpsnap"


def _welcome(settings: Settings) -> str:
    # The keys and passwords stay in their 0600 file: this output is the server's log, and logs
    # travel (journals, collectors) where secrets must not (docs/api.md, Authentication).
    url = f"http://{settings.host}:{settings.port}"
    tokens = (settings.data_dir / "demo-tokens.json").resolve()
    read = f"python3 -c \"import json;print(json.load(open('{tokens}'))"
    return (
        f"\nvpsnap demo at {url}  (API docs: {url}/docs)\n"
        f"keys and panel passwords are in {tokens} "
        "(full = write:all, readonly, other; users)\n"
        f"dashboard: {url}/ - sign in as demo@example.com\n\n"
        "Try it:\n"
        f"  KEY=$({read}['full'])\")\n"
        f'  {_vpsnap_command()} vps list --url {url} --api-key "$KEY"\n'
        f'  curl -s -H "Authorization: Bearer $KEY" {url}/api/v2/vps\n'
    )


async def run_server(settings: Settings, listener: socket.socket, *, demo: bool) -> None:
    """Serve until SIGTERM or SIGINT; then stop accepting requests, let running jobs finish
    within ``settings.shutdown_grace_seconds``, hand the rest back to the queue, and return."""
    from vpsnap.api.app import create_app  # noqa: PLC0415
    from vpsnap.cli.heap import resume_collector  # noqa: PLC0415
    from vpsnap.cli.processes import http_server, stop_on_signals  # noqa: PLC0415
    from vpsnap.demo import seed_demo, start_demo_vm  # noqa: PLC0415
    from vpsnap.logging import configure_logging  # noqa: PLC0415
    from vpsnap.runtime import Runtime, qemu_img_for  # noqa: PLC0415

    configure_logging(settings.log_level, settings.log_format)
    runtime = Runtime.build(settings)
    app = create_app(runtime.services, settings)
    server = http_server(app, settings)
    stopping = asyncio.Event()
    with stop_on_signals(stopping, server):
        async with runtime.embedded():
            if demo:
                await seed_demo(runtime, qemu_img_for(settings))
                await start_demo_vm(runtime)
                # Publish the new VPSes' power states now, not at the next periodic refresh.
                await runtime.observer().refresh_power_states()
            if stopping.is_set():
                return
            serving = asyncio.create_task(server.serve(sockets=[listener]))
            # uvicorn says it listens only through this flag.
            while not server.started and not serving.done():  # noqa: ASYNC110
                await asyncio.sleep(0.05)
            # Start-up is over: what it made lives as long as the process (cli/heap.py).
            resume_collector(freeze=True)
            if demo and server.started:
                click.echo(_welcome(settings), err=True)
            try:
                await serving
            finally:
                await app.state.rate_limits.counter.close()


@click.command("serve")
@click.option("--host", help="Address to listen on (env VPSNAP_HOST; default 127.0.0.1).")
@click.option("--port", type=click.IntRange(0, 65535), help="Port (env VPSNAP_PORT; default 8080).")
@click.option(
    "--data-dir",
    type=click.Path(path_type=Path, file_okay=False),
    help="Data directory (env VPSNAP_DATA_DIR; default ./var).",
)
@click.option("--demo", is_flag=True, default=False, help="Create demo accounts, VPSes and keys.")
@click.option(
    "--log-format",
    type=click.Choice(LOG_FORMATS),
    help="Logs on stderr: console lines on a terminal and JSON otherwise (auto), or as asked.",
)
@click.option(
    "--proxy-headers/--no-proxy-headers",
    default=None,
    help="Believe X-Forwarded-For/-Proto from the --forwarded-allow-ips proxies (127.0.0.1 "
    "when none are listed); --no-proxy-headers: from nobody.",
)
@click.option(
    "--forwarded-allow-ips",
    help="Comma-separated proxy addresses or networks (env VPSNAP_FORWARDED_ALLOW_IPS).",
)
def command(
    host: str | None,
    port: int | None,
    data_dir: Path | None,
    demo: bool,
    log_format: str | None,
    proxy_headers: bool | None,
    forwarded_allow_ips: str | None,
) -> None:
    """Run API, job worker and scheduler in one process (SQLite in the data dir by default)."""
    from vpsnap.cli.heap import collector_paused  # noqa: PLC0415

    # No cyclic collection while the server's modules are imported and its app is built:
    # 15-20 % of the start-up's CPU (cli/heap.py); run_server resumes it once it listens.
    with collector_paused():
        _serve(host, port, data_dir, demo, log_format, proxy_headers, forwarded_allow_ips)


def _serve(
    host: str | None,
    port: int | None,
    data_dir: Path | None,
    demo: bool,
    log_format: str | None,
    proxy_headers: bool | None,
    forwarded_allow_ips: str | None,
) -> None:
    from vpsnap.cli.commands.admin.common import fail, load_settings  # noqa: PLC0415
    from vpsnap.cli.processes import run_event_loop  # noqa: PLC0415
    from vpsnap.domain.errors import DomainError  # noqa: PLC0415

    settings = load_settings(
        host=host,
        port=port,
        data_dir=data_dir,
        log_format=log_format,
        forwarded_allow_ips=forwarded_allow_ips,
    ).with_proxy_headers(proxy_headers)
    try:
        listener = bind(settings.host, settings.port)
    except OSError as exc:
        other = 9000 if settings.port != 9000 else 9001
        script = "scripts/demo" if demo else "vpsnap serve"
        click.echo(
            f"error: cannot listen on {settings.host}:{settings.port}: {exc.strerror or exc} "
            f"(another server, perhaps another vpsnap, uses port {settings.port}). Nothing "
            f"was started. Choose another port: {script} --port {other}",
            err=True,
        )
        raise SystemExit(1) from None
    if settings.port == 0:  # a free port, chosen by the system: say which
        settings = settings.model_copy(update={"port": listener.getsockname()[1]})
    try:
        run_event_loop(run_server(settings, listener, demo=demo))
    except DomainError as exc:
        raise fail(exc) from None
    except KeyboardInterrupt:
        pass
    finally:
        listener.close()
