"""Opaque keyset cursors: the id of the last item of the previous page, wrapped."""

from __future__ import annotations

import base64
import binascii

from vpsnap.domain.errors import InvalidCursor

_PREFIX = "v1:"


def encode_cursor(last_id: str) -> str:
    return base64.urlsafe_b64encode((_PREFIX + last_id).encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> str:
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        text = base64.urlsafe_b64decode(padded.encode("ascii")).decode("utf-8")
    except (binascii.Error, UnicodeError, ValueError):
        raise InvalidCursor("The cursor is not valid; start again without one.") from None
    if not text.startswith(_PREFIX) or len(text) == len(_PREFIX):
        raise InvalidCursor("The cursor is not valid; start again without one.")
    return text[len(_PREFIX) :]
