"""Shell completion of VPS and snapshot names (bash, zsh and fish, through click).

Names are asked of the server with a short timeout and no retries, and cached for
``CACHE_SECONDS`` per server, key and VPS in ``$XDG_CACHE_HOME/vpsnap/completion`` (default
``~/.cache``; mode 0600, named by a hash: the key is never written there), so that pressing
TAB repeatedly costs one request and a fresh cache loads no HTTP code at all. A completion
never prints an error: without a server or a key it offers nothing.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import time
from collections.abc import Callable
from pathlib import Path

import click
from click.shell_completion import CompletionItem

from vpsnap.cli.state import CliState, UsageProblem

CACHE_SECONDS = 30.0
REQUEST_TIMEOUT = 3.0

Names = list[tuple[str, str]]  # (name, help)


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "vpsnap" / "completion"


def _cached(identity: str, fetch: Callable[[], Names]) -> Names:
    path = cache_dir() / (hashlib.sha256(identity.encode()).hexdigest()[:32] + ".json")
    with contextlib.suppress(OSError, ValueError):
        if time.time() - path.stat().st_mtime < CACHE_SECONDS:
            return [(str(n), str(h)) for n, h in json.loads(path.read_text())]
    names = fetch()
    with contextlib.suppress(OSError):
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "w") as handle:
            json.dump(names, handle)
    return names


def _complete(
    ctx: click.Context, kind: str, incomplete: str, fetch_with: Callable[..., Names]
) -> list[CompletionItem]:
    current = ctx.find_object(CliState) or CliState()
    try:
        url, key = current.connection()
    except UsageProblem:
        return []

    def fetch() -> Names:
        from vpsnap.client import NO_RETRIES, Client  # noqa: PLC0415 - only on a cache miss

        with Client(url, key, timeout=REQUEST_TIMEOUT, retry=NO_RETRIES) as client:
            return fetch_with(client)

    try:
        names = _cached(f"{url}\0{key}\0{kind}", fetch)
    except Exception:  # a completion offers nothing rather than a traceback
        return []
    folded = incomplete.casefold()
    return [CompletionItem(n, help=h) for n, h in names if n.casefold().startswith(folded)]


def complete_vps(
    ctx: click.Context, param: click.Parameter, incomplete: str
) -> list[CompletionItem]:
    def fetch(client: object) -> Names:
        return [(v.name, f"{v.id} {v.primary_ip or ''}".strip()) for v in client.vps.list()]  # type: ignore[attr-defined]

    return _complete(ctx, "vps", incomplete, fetch)


def complete_snapshot(
    ctx: click.Context, param: click.Parameter, incomplete: str
) -> list[CompletionItem]:
    vps = ctx.params.get("vps")
    if not isinstance(vps, str) or not vps:
        return []

    def fetch(client: object) -> Names:
        listing = client.snapshots.list(vps)  # type: ignore[attr-defined]
        return [(s.name, f"{s.status}, {s.origin}") for s in listing.snapshots]

    return _complete(ctx, f"snapshots\0{vps}", incomplete, fetch)
