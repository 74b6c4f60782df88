"""Public identifiers: a short prefix plus a lowercase ULID (``vps_01hxa…``)."""

from __future__ import annotations

import re

from ulid import ULID

_ULID_PART = r"[0-9a-hjkmnp-tv-z]{26}"


def new_id(prefix: str) -> str:
    return f"{prefix}_{str(ULID()).lower()}"


def is_valid_id(prefix: str, value: str) -> bool:
    return re.fullmatch(f"{prefix}_{_ULID_PART}", value) is not None
