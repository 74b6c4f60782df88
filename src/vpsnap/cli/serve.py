"""``vpsnap serve``: the embedded mode (API + worker + scheduler in one process)."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Iterator
from typing import Any

import uvicorn
from rich.console import Console

from vpsnap.api.app import create_app
from vpsnap.cli.demo import seed_demo, start_demo_vm
from vpsnap.logging import configure_logging
from vpsnap.runtime import Runtime, qemu_img_for
from vpsnap.settings import Settings


def _print_welcome(settings: Settings, tokens: dict[str, Any]) -> None:
    url = f"http://{settings.host}:{settings.port}"
    console = Console(stderr=True)
    console.print(f"\n[bold]vpsnap demo[/bold] at {url}  (API docs: {url}/docs)")
    console.print(f"keys are in {settings.data_dir / 'demo-tokens.json'}")
    console.print(f"demo key (write:all): {tokens['full']}")
    users: dict[str, str] = tokens.get("users", {})
    if "demo@example.com" in users:
        console.print(
            f"dashboard: {url}/ — sign in as demo@example.com, password {users['demo@example.com']}"
        )
    console.print()
    console.print("Try it:")
    console.print(
        f"  curl -s -H 'Authorization: Bearer {tokens['full']}' {url}/api/v2/vps\n",
        soft_wrap=True,
    )


class _Server(uvicorn.Server):
    """uvicorn without its own signal handling.

    uvicorn re-raises a captured SIGTERM once ``serve()`` returns, which ends the process
    before the worker's shutdown grace runs: jobs in flight would stay ``in_progress`` until
    the next start. vpsnap installs its handlers itself (``run_server``).
    """

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


async def run_server(settings: Settings, *, demo: bool) -> None:
    """Serve until SIGTERM or SIGINT; then stop accepting requests, let running jobs finish
    within ``settings.shutdown_grace_seconds``, hand the rest back to the queue, and return."""
    configure_logging(settings.log_level)
    runtime = Runtime.build(settings)
    app = create_app(runtime.services, settings)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_config=None,
        access_log=False,  # the edge middleware logs every request as JSON
        lifespan="off",
    )
    server = _Server(config)
    loop = asyncio.get_running_loop()

    def shut_down() -> None:
        server.should_exit = True

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, shut_down)
    try:
        async with runtime.embedded():
            if demo:
                tokens = await seed_demo(runtime, qemu_img_for(settings))
                await start_demo_vm(runtime)
                _print_welcome(settings, tokens)
            if not server.should_exit:
                await server.serve()
    finally:
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)
