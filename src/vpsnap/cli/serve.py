"""``vpsnap serve``: the embedded mode (API + worker + scheduler in one process)."""

from __future__ import annotations

import uvicorn
from rich.console import Console

from vpsnap.api.app import create_app
from vpsnap.cli.demo import seed_demo, start_demo_vm
from vpsnap.logging import configure_logging
from vpsnap.runtime import Runtime, qemu_img_for
from vpsnap.settings import Settings


def _print_welcome(settings: Settings) -> None:
    # The keys stay in their 0600 file: this output is the server's log, and logs travel
    # (journals, collectors) where key material must not (docs/api.md, Authentication).
    url = f"http://{settings.host}:{settings.port}"
    tokens = (settings.data_dir / "demo-tokens.json").resolve()
    console = Console(stderr=True)
    console.print(f"\n[bold]vpsnap demo[/bold] at {url}  (API docs: {url}/docs)")
    console.print(f"keys are in {tokens} (full = write:all, readonly, other)\n")
    console.print("Try it:")
    console.print(
        f"""  KEY=$(python3 -c "import json;print(json.load(open('{tokens}'))['full'])")""",
        soft_wrap=True,
    )
    console.print(f'  curl -s -H "Authorization: Bearer $KEY" {url}/api/v2/vps\n', soft_wrap=True)


async def run_server(settings: Settings, *, demo: bool) -> None:
    configure_logging(settings.log_level)
    runtime = Runtime.build(settings)
    async with runtime.embedded():
        if demo:
            await seed_demo(runtime, qemu_img_for(settings))
            await start_demo_vm(runtime)
            _print_welcome(settings)
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
