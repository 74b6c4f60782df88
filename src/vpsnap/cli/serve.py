"""``vpsnap serve``: the embedded mode (API + worker + scheduler in one process)."""

from __future__ import annotations

import asyncio

from rich.console import Console

from vpsnap.cli.demo import seed_demo, start_demo_vm
from vpsnap.cli.scaleout import http_server, stop_on_signals
from vpsnap.logging import configure_logging
from vpsnap.runtime import Runtime, qemu_img_for
from vpsnap.settings import Settings


def _print_welcome(settings: Settings, tokens: dict[str, str]) -> None:
    url = f"http://{settings.host}:{settings.port}"
    console = Console(stderr=True)
    console.print(f"\n[bold]vpsnap demo[/bold] at {url}  (API docs: {url}/docs)")
    console.print(f"keys are in {settings.data_dir / 'demo-tokens.json'}")
    console.print(f"demo key (write:all): {tokens['full']}\n")
    console.print("Try it:")
    console.print(
        f"  curl -s -H 'Authorization: Bearer {tokens['full']}' {url}/api/v2/vps\n",
        soft_wrap=True,
    )


async def run_server(settings: Settings, *, demo: bool) -> None:
    """Serve until SIGTERM or SIGINT; then stop accepting requests, let running jobs finish
    within ``settings.shutdown_grace_seconds``, hand the rest back to the queue, and return."""
    configure_logging(settings.log_level)
    runtime = Runtime.build(settings)
    server = http_server(runtime, settings)
    stopping = asyncio.Event()
    with stop_on_signals(stopping, server):
        async with runtime.embedded():
            if demo:
                tokens = await seed_demo(runtime, qemu_img_for(settings))
                await start_demo_vm(runtime)
                _print_welcome(settings, tokens)
            if not stopping.is_set():
                await server.serve()
