"""``Idempotency-Key`` use cases: remember the first answer to a POST or DELETE and replay it.

The HTTP adapter (``vpsnap.api.idempotency``) only reads the header and the body and captures
the response; every decision is made here, so it can be tested without HTTP:

- ``parse_key`` checks the header (1..255 visible ASCII characters, sent once);
- ``IdempotentRequest.of`` fingerprints the request (method, path with query, raw body);
- ``IdempotencyService.begin`` claims the key (an ``in_flight`` record, in its own
  transaction, before the handler runs) or answers with the stored response, or refuses:
  ``IdempotencyKeyReused`` (422) for another request under the same key,
  ``IdempotencyKeyInUse`` (409) while the first request is still being handled;
- ``finish`` stores the answer when it is one to replay, and frees the key when it is not;
- ``abandon`` frees the key after the handler failed;
- ``purge_expired`` is the housekeeping sweep.

See ``docs/idempotency.md`` for the behaviour as clients see it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from urllib.parse import quote

from vpsnap.domain.clock import Clock
from vpsnap.domain.errors import (
    FieldError,
    IdempotencyKeyInUse,
    IdempotencyKeyReused,
    InvalidRequest,
)
from vpsnap.domain.idempotency import (
    KEY_MAX_LENGTH,
    RECORD_LIFETIME,
    IdempotencyRecord,
    IdempotencyState,
)
from vpsnap.domain.ports import Store

HEADER = "Idempotency-Key"
POINTER = "/headers/Idempotency-Key"

REPLAYED_HEADERS = frozenset({"content-type", "location", "allow", "link"})
"""Response headers stored with an answer. An allow-list, because everything else is either
about the request that carries it (``X-Request-Id``, the rate-limit fields, ``Retry-After``,
``Date``) or about framing (``Content-Length`` is recomputed on replay)."""

NOT_REPLAYED_STATUSES = frozenset({401, 403, 408, 425, 429})
"""4xx answers that say "not now" or "not with this credential" rather than deciding about the
request: a retry must really run again. (Keys are per account, so another key of the same
account, one with the missing scope, may retry under the same Idempotency-Key.)"""

MAX_STORED_BODY_BYTES = 1024 * 1024
"""Bigger answers are not stored (no POST/DELETE of vpsnap comes close; this bounds the row
and the memory the adapter spends buffering one response)."""

_PATH_COLUMN_LENGTH = 500  # idempotency_records.path: informational, the fingerprint is exact


def parse_key(values: Sequence[str]) -> str | None:
    """The ``Idempotency-Key`` of a request (``values``: every occurrence of the header, as
    sent, decoded as latin-1), None when there is none.

    Raises ``InvalidRequest`` (400, pointer ``/headers/Idempotency-Key``) for an empty key, one
    over ``KEY_MAX_LENGTH`` characters, one with anything but visible ASCII (``!``..``~``:
    no spaces, no control or non-ASCII characters), or a header sent more than once.
    """
    if not values:
        return None
    if len(values) > 1:
        raise _invalid("Send the Idempotency-Key header once.", "invalid_format")
    key = values[0]
    if not key:
        raise _invalid("The Idempotency-Key must not be empty.", "invalid_format")
    if len(key) > KEY_MAX_LENGTH:
        raise _invalid(
            f"The Idempotency-Key must be at most {KEY_MAX_LENGTH} characters.", "too_long"
        )
    if not all("!" <= char <= "~" for char in key):
        raise _invalid(
            "The Idempotency-Key may contain only visible ASCII characters (no spaces).",
            "invalid_format",
        )
    return key


# Visible ASCII stays as it is; anything else (controls, NUL, spaces, non-ASCII) is
# percent-encoded, as it was on the wire.
_VISIBLE_ASCII = "".join(chr(c) for c in range(0x21, 0x7F))


def readable_target(target: str) -> str:
    """``target`` as stored and shown (``first: POST /api/…``): visible ASCII only.

    The path arrives percent-decoded and may hold anything a client sent, NUL included,
    which PostgreSQL refuses to store; the record keeps it re-encoded instead. (The column is
    informational: the fingerprint, over the target as received, decides.)
    """
    return quote(target, safe=_VISIBLE_ASCII)


def _invalid(detail: str, code: str) -> InvalidRequest:
    return InvalidRequest(
        "The Idempotency-Key header is invalid.",
        [FieldError(pointer=POINTER, detail=detail, code=code)],
    )


def fingerprint(method: str, target: str, body: bytes) -> str:
    """SHA-256 (hex) of method, path with query, and the raw body.

    NUL separates the parts: it cannot occur in a method or in a request target, so no two
    different requests share the input.
    """
    digest = hashlib.sha256()
    digest.update(method.upper().encode("ascii"))
    digest.update(b"\0")
    digest.update(target.encode("utf-8"))
    digest.update(b"\0")
    digest.update(body)
    return digest.hexdigest()


@dataclass(frozen=True, slots=True)
class IdempotentRequest:
    """One request that carries an Idempotency-Key, as far as idempotency cares."""

    owner: str
    """The account the key space belongs to."""
    key: str
    method: str
    target: str
    """Path and, when present, ``?`` and the query string, as sent."""
    fingerprint: str

    @classmethod
    def of(cls, owner: str, key: str, method: str, target: str, body: bytes) -> IdempotentRequest:
        return cls(owner, key, method.upper(), target, fingerprint(method, target, body))


@dataclass(frozen=True, slots=True)
class Answer:
    """An HTTP response: the one the handler gave, or the stored one to replay."""

    status: int
    headers: tuple[tuple[str, str], ...] = ()
    """Lower-case names; in a replay only the ``REPLAYED_HEADERS`` that the first answer had."""
    body: bytes = field(default=b"", repr=False)


def replayable(answer: Answer) -> bool:
    """Whether a retry should get this answer again instead of running again.

    Yes for 2xx (and 3xx) and for 4xx that decide about the request (400, 404, 409, 422...);
    no for 5xx (the failure is ours: a retry must really retry), for the
    ``NOT_REPLAYED_STATUSES``, and for bodies that are not storable text or too big.
    """
    if not 200 <= answer.status < 500 or answer.status in NOT_REPLAYED_STATUSES:
        return False
    return len(answer.body) <= MAX_STORED_BODY_BYTES and _as_text(answer.body) is not None


def _as_text(body: bytes) -> str | None:
    # The record keeps the body as text. Every answer of vpsnap is JSON (UTF-8); anything else
    # is not stored rather than stored lossily. NUL is refused because PostgreSQL's text type
    # cannot hold it.
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        return None
    return None if "\0" in text else text


def _stored_headers(headers: Iterable[tuple[str, str]]) -> dict[str, str]:
    kept: dict[str, str] = {}
    for name, value in headers:
        lower = name.lower()
        if lower in REPLAYED_HEADERS:
            # A repeated list header (Link) folds into one, as HTTP allows.
            kept[lower] = f"{kept[lower]}, {value}" if lower in kept else value
    return kept


@dataclass(frozen=True, slots=True)
class IdempotencyService:
    store: Store
    clock: Clock

    async def begin(self, request: IdempotentRequest) -> Answer | None:
        """Claim the key for ``request``, or answer for it.

        None: the key is now ``in_flight`` for this request (committed before this returns, so
        a concurrent retry sees it); the caller runs the handler and then must call ``finish``
        or ``abandon``. An ``Answer``: the stored first answer, to be sent instead of running
        the handler. Raises ``IdempotencyKeyReused`` when the key was used for a different
        request, ``IdempotencyKeyInUse`` while the first request is still being handled.
        """
        now = self.clock.now()
        async with self.store.transaction() as tx:
            record = await tx.get_idempotency(request.owner, request.key)
            if record is not None and record.expires_at <= now:
                # An expired record counts as absent. Removed by the expiry condition, never by
                # key: a concurrent request that just replaced it keeps its fresh record (and
                # this insert then fails as "in use"). Other expired records go too, which only
                # does the housekeeping sweep's work early.
                await tx.purge_idempotency(now)
                record = None
            if record is not None:
                return _decide(record, request)
            await tx.add_idempotency(
                IdempotencyRecord(
                    owner=request.owner,
                    key=request.key,
                    method=request.method,
                    path=readable_target(request.target)[:_PATH_COLUMN_LENGTH],
                    fingerprint=request.fingerprint,
                    state=IdempotencyState.IN_FLIGHT,
                    response_status=None,
                    response_headers=None,
                    response_body=None,
                    created_at=now,
                    expires_at=now + RECORD_LIFETIME,
                )
            )
        return None

    async def finish(self, request: IdempotentRequest, answer: Answer) -> bool:
        """Store the handler's answer for replay, or free the key when the answer is not one to
        replay (see ``replayable``). True when stored."""
        text = _as_text(answer.body) if replayable(answer) else None
        async with self.store.transaction() as tx:
            if text is None:
                await tx.remove_idempotency(request.owner, request.key)
                return False
            await tx.complete_idempotency(
                request.owner,
                request.key,
                answer.status,
                _stored_headers(answer.headers),
                text,
            )
        return True

    async def abandon(self, request: IdempotentRequest) -> None:
        """Free the key: the handler failed, so a retry must run it again."""
        async with self.store.transaction() as tx:
            await tx.remove_idempotency(request.owner, request.key)

    async def purge_expired(self) -> int:
        """Delete every record past its ``expires_at``; returns how many."""
        async with self.store.transaction() as tx:
            return await tx.purge_idempotency(self.clock.now())


def _decide(record: IdempotencyRecord, request: IdempotentRequest) -> Answer:
    # The fingerprint is checked first: another request under a used key is a client bug that
    # waiting will not fix, so it gets the same 422 whether the first is finished or not.
    if record.fingerprint != request.fingerprint:
        raise IdempotencyKeyReused(
            "This Idempotency-Key was already used for a different request (first: "
            f"{record.method} {record.path}); a key belongs to one method, path and body. "
            "Use a new key for a new request."
        )
    if record.state is IdempotencyState.IN_FLIGHT or record.response_status is None:
        raise IdempotencyKeyInUse(
            "The first request with this Idempotency-Key is still being handled. "
            "Retry shortly to get its answer."
        )
    headers = tuple(sorted((record.response_headers or {}).items()))
    body = (record.response_body or "").encode("utf-8")
    return Answer(record.response_status, headers, body)
