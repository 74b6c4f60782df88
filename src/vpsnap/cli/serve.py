"""``vpsnap serve``: the embedded mode (API + worker + scheduler in one process)."""

from __future__ import annotations

import uvicorn
from rich.console import Console

from vpsnap.api.app import create_app
from vpsnap.cli.demo import seed_demo, start_demo_vm
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
    configure_logging(settings.log_level)
    runtime = Runtime.build(settings)
    async with runtime.embedded():
        if demo:
            tokens = await seed_demo(runtime, qemu_img_for(settings))
            await start_demo_vm(runtime)
            _print_welcome(settings, tokens)
        app = create_app(runtime.services, settings)
        config = uvicorn.Config(
            app,
            host=settings.host,
            port=settings.port,
            log_config=None,
            access_log=False,  # the edge middleware logs every request as JSON
            lifespan="off",
            # uvicorn would believe X-Forwarded-* from 127.0.0.1 by default; the app applies
            # them itself, from VPSNAP_FORWARDED_ALLOW_IPS only (api/app.py, api/trust.py).
            proxy_headers=False,
        )
        await uvicorn.Server(config).serve()
