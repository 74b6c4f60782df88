"""Public identifiers: a short prefix plus a lowercase ULID (``vps_01hxa…``).

A ULID is 26 Crockford base32 characters (no ``i``, ``l``, ``o``, ``u``); its first character
is at most ``7`` because a ULID is 128 bits.
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
    return f"{prefix}_{str(ULID()).lower()}"


def is_valid_id(prefix: str, value: str) -> bool:
    """Whether ``value`` has the shape of an id with ``prefix`` (says nothing of existence)."""
    return re.fullmatch(f"{prefix}_{_ULID_PART}", value) is not None
