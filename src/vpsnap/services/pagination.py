"""Opaque keyset cursors: the id of the last item of the previous page, wrapped.

A cursor is validated completely before it is used: it must decode to ``v1:`` and an id of
the listed kind (``vps_`` + ULID), or it is ``invalid_cursor``; the store only ever sees a
well-formed id.
"""

from __future__ import annotations

import base64
import binascii

from vpsnap.domain.errors import InvalidCursor
from vpsnap.domain.ids import is_valid_id

_PREFIX = "v1:"
# Far longer than any cursor this server hands out (~44 characters); bounds the decoding work.
MAX_CURSOR_LENGTH = 200


def encode_cursor(last_id: str) -> str:
    return base64.urlsafe_b64encode((_PREFIX + last_id).encode()).decode().rstrip("=")


def decode_cursor(cursor: str, id_prefix: str = "vps") -> str:
    """The id a cursor from ``encode_cursor`` holds; raises ``InvalidCursor`` for anything
    else (not base64url, not UTF-8, another version, not an id with ``id_prefix``)."""
    invalid = InvalidCursor("The cursor is not valid; start again without one.")
    if len(cursor) > MAX_CURSOR_LENGTH:
        raise invalid
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        text = base64.urlsafe_b64decode(padded.encode("ascii")).decode("utf-8")
    except (binascii.Error, UnicodeError, ValueError):
        raise invalid from None
    if not text.startswith(_PREFIX) or not is_valid_id(id_prefix, text[len(_PREFIX) :]):
        raise invalid
    return text[len(_PREFIX) :]
