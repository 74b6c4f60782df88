"""A bare FastAPI app serving fixed JSON bodies over HTTP with ``vpsnap serve``'s uvicorn
settings: the baseline of ``scale.py``'s requests/s.

    .venv/bin/python bench/bare_http.py PORT BODIES.json

``BODIES.json`` maps a path to the JSON body it answers. Same as ``vpsnap serve``
(cli/commands/serve.py): a listening socket made with ``socket.create_server`` and Nagle off
(``cli.processes.no_nagle``), uvicorn's ``Server`` without its signal handling, ``log_config``
None, no access log, lifespan off, no proxy headers, ``asyncio.run`` (the standard event loop);
uvicorn's HTTP implementation is its default for both. No authentication, middleware, store or
response model: what FastAPI and uvicorn cost alone.
"""

from __future__ import annotations

import asyncio
import json
import socket
import sys
from pathlib import Path
from typing import Any

import uvicorn
from common import bare_app

from vpsnap.cli.processes import Server, no_nagle


async def serve(port: int, bodies: dict[str, Any]) -> None:
    listener = socket.create_server(("127.0.0.1", port), backlog=2048)
    no_nagle(listener)
    config = uvicorn.Config(
        bare_app(bodies), log_config=None, access_log=False, lifespan="off", proxy_headers=False
    )
    server = Server(config)
    loop = asyncio.get_running_loop()
    import signal  # noqa: PLC0415

    loop.add_signal_handler(signal.SIGTERM, lambda: setattr(server, "should_exit", True))
    await server.serve(sockets=[listener])


def main() -> int:
    port = int(sys.argv[1])
    bodies = json.loads(Path(sys.argv[2]).read_text())
    asyncio.run(serve(port, bodies))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
