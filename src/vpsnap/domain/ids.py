"""Public identifiers: a short prefix plus a lowercase ULID (``vps_01hxa…``).

A ULID is 26 Crockford base32 characters (no ``i``, ``l``, ``o``, ``u``); its first character
is at most ``7`` because a ULID is 128 bits.

python-ulid makes them, monotonically within the process (within one millisecond the
randomness of the last one is incremented), so the ids of one process sort in the order they
were made (the audit trail pages by id). A hand-made generator was measured at 0.35-3.8 µs an
id against python-ulid's 5-10 µs and not kept: about 1 s of a 100,000-snapshot sweep (two ids
per snapshot) does not pay for owning the encoding and the monotonic rule
(docs/performance.md, "Retention sweep, third round").
"""

from __future__ import annotations

import re

from ulid import ULID

_ULID_PART = r"[0-7][0-9a-hjkmnp-tv-z]{25}"


def id_pattern(prefix: str) -> str:
    """The anchored regular expression of an id with ``prefix`` (also used in OpenAPI)."""
    return f"^{prefix}_{_ULID_PART}$"


VPS_ID_PATTERN = id_pattern("vps")
JOB_ID_PATTERN = id_pattern("job")


def new_id(prefix: str) -> str:
    """A new id ``{prefix}_{ulid}``, later than every id this process made before."""
    return f"{prefix}_{str(ULID()).lower()}"


def new_ids(prefix: str, count: int) -> list[str]:
    """``count`` new ids, ascending (``new_id`` ``count`` times: set-based work's one call)."""
    return [f"{prefix}_{str(ULID()).lower()}" for _ in range(count)]


def is_valid_id(prefix: str, value: str) -> bool:
    """Whether ``value`` has the shape of an id with ``prefix`` (says nothing of existence)."""
    return re.fullmatch(f"{prefix}_{_ULID_PART}", value) is not None
