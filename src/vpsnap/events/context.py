"""Where the action being served came from: its request id and client address.

The HTTP layer sets it for the duration of a request (``vpsnap.api.origin``); the services read
it when they write an audit event or queue a job, so that no service ever sees a request. Work
that no request started (the scheduler, the worker, admin commands) has an empty origin.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Origin:
    request_id: str | None = None
    client_ip: str | None = None
    """The client's address: the peer's, or the one a trusted proxy names
    (``VPSNAP_FORWARDED_ALLOW_IPS``)."""


NO_ORIGIN = Origin()
_current: ContextVar[Origin] = ContextVar("vpsnap_origin", default=NO_ORIGIN)


def current_origin() -> Origin:
    return _current.get()


@contextmanager
def originating(origin: Origin) -> Iterator[None]:
    """Run the block as serving ``origin``."""
    token = _current.set(origin)
    try:
        yield
    finally:
        _current.reset(token)
