"""The last line of defence between host internals and a tenant-facing problem ``detail``.

Drivers put host paths, socket names, process ids and tool output only into an error's
``log_detail`` (operator-facing, logged); a ``detail`` names the customer's objects (VPS,
snapshot, "disk 2 of web-1"). Anything that slips through anyway is masked here, at the one
boundary every problem document passes (``vpsnap.domain.problems.error_summary``): absolute
file paths (API paths such as ``/api/v2/...`` are kept), unix socket names and process ids.
"""

from __future__ import annotations

import re

MASK = "[host detail]"

# An absolute path of at least two segments that is not part of a URL or a longer word
# ("and/or", "2026/01/01"); the API's own paths stay, clients are told to call them.
_PATH = re.compile(r"(?<![\w/.:~-])/(?!api/|errors\b)[\w.@%+=,~-]+(?:/[\w.@%+=,~-]*)+")
_SOCKET = re.compile(r"[\w./@%+=,~-]*\.sock\b")
_PID = re.compile(r"\b(pid|process)\s+\d+\b", re.IGNORECASE)


def tenant_safe(text: str) -> str:
    """``text`` with host paths, socket names and process ids replaced by ``[host detail]``."""
    text = _PATH.sub(MASK, text)
    text = _SOCKET.sub(MASK, text)
    return _PID.sub(lambda match: f"{match.group(1)} {MASK}", text)


def reveals_host(text: str) -> bool:
    """Whether ``text`` holds something ``tenant_safe`` would mask (tests, log warnings)."""
    return tenant_safe(text) != text
