"""The garbage collector around a server's start-up.

A server start imports about 1,100 modules and builds FastAPI's routes and pydantic's schemas:
some 220,000 objects that live as long as the process, none of them garbage. CPython's cyclic
collector runs while they are made (every 700 net allocations a young collection, and full ones
as the old generation grows), and each run walks what was made so far: 15-20 % of the start-up's
CPU (docs/performance.md, "Start-up and pacing"). It is paused until the server listens; then the
objects made so far are frozen (``gc.freeze``: moved to a generation no collection walks, so a
later full collection — about 75-100 ms of CPU with them, on the event loop — does not walk
them again) and the collector runs as usual for everything made after.

Freezing without a collection first keeps the start-up's few unreachable cycles (about 900
objects at 10,000 VPSes) for the life of the process: a few hundred KiB, against a 75-100 ms
pause of the event loop right when the first requests come.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def collector_paused() -> Iterator[None]:
    """No cyclic garbage collection in the block (a server's whole run: its start-up calls
    :func:`resume_collector` with ``freeze`` once it listens); collection is on again after
    the block however it ends."""
    gc.disable()
    try:
        yield
    finally:
        resume_collector(freeze=False)


def resume_collector(*, freeze: bool) -> None:
    """Collect again; with ``freeze``, every object alive now is left out of later
    collections for good (call it once the server is up). Idempotent."""
    if freeze and not gc.isenabled():
        gc.freeze()
    gc.enable()
