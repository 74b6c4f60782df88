"""A small HTTP/1.1 load generator: keep-alive connections, one request at a time each, for a
fixed time; prints requests/s and latency percentiles as JSON.

    .venv/bin/python bench/http_load.py http://127.0.0.1:8080/api/v2/vps?limit=20 \\
        --seconds 5 --connections 4 --header "Authorization: Bearer KEY"

Used by ``scale.py`` (as a process of its own, so that it shares no interpreter with the bench
or the server). Written on asyncio streams with the request's bytes built once, not on httpx:
httpx's own CPU per request (about a millisecond) would cap a bare FastAPI app before the app
itself does, and make every server look alike. It reads ``Content-Length`` bodies only (what
uvicorn sends for JSON answers); any status other than ``--expect`` ends the run with an error.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from urllib.parse import urlsplit


async def _one_connection(
    host: str, port: int, request: bytes, until: float, expect: int, latencies: list[float]
) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    try:
        while time.perf_counter() < until:
            started = time.perf_counter()
            writer.write(request)
            status_line = await reader.readline()
            length = 0
            while True:
                line = await reader.readline()
                if line in (b"\r\n", b""):
                    break
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            await reader.readexactly(length)
            status = int(status_line.split()[1])
            if status != expect:
                raise SystemExit(f"answered {status_line.decode().strip()}, expected {expect}")
            latencies.append((time.perf_counter() - started) * 1000)
    finally:
        writer.close()


async def load(
    url: str, headers: list[str], seconds: float, connections: int, expect: int
) -> dict[str, float]:
    """Requests/s over ``seconds`` with ``connections`` keep-alive connections, and p50/p99 ms."""
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    target = parts.path + (f"?{parts.query}" if parts.query else "")
    lines = [f"GET {target} HTTP/1.1", f"Host: {parts.netloc}", *headers, "", ""]
    request = "\r\n".join(lines).encode()
    latencies: list[float] = []
    started = time.perf_counter()
    until = started + seconds
    await asyncio.gather(
        *(
            _one_connection(host, port, request, until, expect, latencies)
            for _ in range(connections)
        )
    )
    elapsed = time.perf_counter() - started
    ordered = sorted(latencies)
    return {
        "requests": len(ordered),
        "seconds": elapsed,
        "rps": len(ordered) / elapsed,
        "p50_ms": statistics.median(ordered) if ordered else float("nan"),
        "p99_ms": ordered[int((len(ordered) - 1) * 0.99)] if ordered else float("nan"),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("url")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--connections", type=int, default=4)
    parser.add_argument("--header", action="append", default=[], help="'Name: value'")
    parser.add_argument("--expect", type=int, default=200, help="the status every answer has")
    args = parser.parse_args()
    result = asyncio.run(load(args.url, args.header, args.seconds, args.connections, args.expect))
    json.dump(result, sys.stdout)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
