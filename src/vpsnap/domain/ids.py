"""Public identifiers: a short prefix plus a lowercase ULID (``vps_01hxa…``).

A ULID is 26 Crockford base32 characters (no ``i``, ``l``, ``o``, ``u``); its first character
is at most ``7`` because a ULID is 128 bits: 48 bits of Unix time in milliseconds, then 80
bits of randomness.

Ids are generated here, monotonically within the process (the ULID spec's monotonic mode, as
python-ulid's ``ULID()`` does it): within one millisecond the randomness of the last id is
incremented instead of drawn again, so the ids of one process sort in the order they were
made (the audit trail pages by id). ``new_ids`` makes a run of them at once for set-based work:
the retention sweep makes two per expired snapshot, and python-ulid's object per id cost
~10-15 µs each (docs/performance.md, "Retention sweep, third round").
"""

from __future__ import annotations

import os
import re
import threading
import time

_ULID_PART = r"[0-7][0-9a-hjkmnp-tv-z]{25}"

_ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"  # Crockford's base32, lowercase
# Every 10-bit value as its two characters: a ULID (130 bits with two leading zeros) is 13 of
# them.
_PAIRS = tuple(a + b for a in _ALPHABET for b in _ALPHABET)
_RANDOM_BITS = 80
_MAX_RANDOM = (1 << _RANDOM_BITS) - 1
_MAX_MS = (1 << 48) - 1


class _Monotonic:
    """The process's ULID sequence: (millisecond, randomness) of the last id made."""

    def __init__(self) -> None:
        self._lock = threading.Lock()  # ids are made on worker threads too
        self._ms = -1
        self._random = 0

    def take(self, count: int) -> tuple[int, int]:
        """Reserve ``count`` consecutive ids: their millisecond and the first one's randomness
        (the others follow by +1)."""
        now = time.time_ns() // 1_000_000
        with self._lock:
            if now <= self._ms and self._random + count <= _MAX_RANDOM:
                # Same millisecond (or the clock stepped back): continue the sequence.
                ms, first = self._ms, self._random + 1
            else:
                # A new millisecond (or the sequence ran out: move on by a millisecond, as
                # python-ulid would wait for the next one). Leave room for ``count`` at the top.
                ms = self._ms + 1 if now <= self._ms else now
                first = int.from_bytes(os.urandom(10), "big") & (_MAX_RANDOM >> 1)
            if ms > _MAX_MS:
                raise OverflowError("ULID timestamp out of range")
            self._ms, self._random = ms, first + count - 1
        return ms, first


_sequence = _Monotonic()


def _encode(value: int) -> str:
    """The 26 characters of a 128-bit ULID."""
    return _high(value >> 20) + _low(value)


def _high(value: int) -> str:
    # The ULID's first 108 bits (22 characters: the leading one holds 3 bits).
    p = _PAIRS
    return (
        p[value >> 100]
        + p[value >> 90 & 1023]
        + p[value >> 80 & 1023]
        + p[value >> 70 & 1023]
        + p[value >> 60 & 1023]
        + p[value >> 50 & 1023]
        + p[value >> 40 & 1023]
        + p[value >> 30 & 1023]
        + p[value >> 20 & 1023]
        + p[value >> 10 & 1023]
        + p[value & 1023]
    )


def _low(value: int) -> str:
    # The last 20 bits (4 characters).
    return _PAIRS[value >> 10 & 1023] + _PAIRS[value & 1023]


def id_pattern(prefix: str) -> str:
    """The anchored regular expression of an id with ``prefix`` (also used in OpenAPI)."""
    return f"^{prefix}_{_ULID_PART}$"


VPS_ID_PATTERN = id_pattern("vps")
JOB_ID_PATTERN = id_pattern("job")


def new_id(prefix: str) -> str:
    """A new id ``{prefix}_{ulid}``, later than every id this process made before."""
    ms, random = _sequence.take(1)
    return f"{prefix}_{_encode(ms << _RANDOM_BITS | random)}"


def new_ids(prefix: str, count: int) -> list[str]:
    """``count`` new ids at once, ascending, as ``count`` calls of ``new_id`` would make them
    (one millisecond, consecutive randomness): the cost of one id is the encoding alone."""
    if count <= 0:
        return []
    ms, random = _sequence.take(count)
    first = ms << _RANDOM_BITS | random
    ids: list[str] = []
    # Consecutive values share their first 22 characters until the low 20 bits wrap: encode
    # those once per block of 2**20.
    value, end = first, first + count
    while value < end:
        block_end = min(end, (value >> 20) + 1 << 20)
        head = f"{prefix}_{_high(value >> 20)}"
        ids += [head + _low(v) for v in range(value, block_end)]
        value = block_end
    return ids


def is_valid_id(prefix: str, value: str) -> bool:
    """Whether ``value`` has the shape of an id with ``prefix`` (says nothing of existence)."""
    return re.fullmatch(f"{prefix}_{_ULID_PART}", value) is not None
