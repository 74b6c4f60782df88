"""IdempotencyService without HTTP: key rules, fingerprints, claim/store/replay/refuse, expiry
and purge, on the real store (SQLite and PostgreSQL) with a ManualClock."""

from __future__ import annotations

import asyncio

import pytest

from tests.support import ManualClock
from vpsnap.domain.errors import IdempotencyKeyInUse, IdempotencyKeyReused, InvalidRequest
from vpsnap.domain.idempotency import RECORD_LIFETIME, IdempotencyRecord, IdempotencyState
from vpsnap.services.idempotency import (
    MAX_STORED_BODY_BYTES,
    Answer,
    IdempotencyService,
    IdempotentRequest,
    fingerprint,
    parse_key,
)
from vpsnap.store.sql import SqlStore

OWNER = "acct_01hxa3b4c5d6e7f8g9h0j1k2m3"
STRANGER = "acct_01hxa3b4c5d6e7f8g9h0j1k2m4"
TARGET = "/api/v2/vps/vps_1/snapshots"
BODY = b'{"name":"before-upgrade"}'
ACCEPTED = Answer(
    202,
    (
        ("content-type", "application/json"),
        ("content-length", "120"),
        ("location", "/api/jobs/job_1"),
        ("x-request-id", "req_first"),
        ("x-ratelimit-remaining", "599"),
        ("retry-after", "3"),
    ),
    b'{"operation":{"status":"queued","jobId":"job_1"}}',
)


@pytest.fixture
def service(store: SqlStore, clock: ManualClock) -> IdempotencyService:
    return IdempotencyService(store, clock)


def request_for(
    key: str = "key-1",
    *,
    owner: str = OWNER,
    method: str = "POST",
    target: str = TARGET,
    body: bytes = BODY,
) -> IdempotentRequest:
    return IdempotentRequest.of(owner, key, method, target, body)


async def record_of(store: SqlStore, key: str = "key-1", owner: str = OWNER) -> IdempotencyRecord:
    async with store.transaction(read_only=True) as tx:
        record = await tx.get_idempotency(owner, key)
    assert record is not None
    return record


async def is_free(store: SqlStore, key: str = "key-1", owner: str = OWNER) -> bool:
    async with store.transaction(read_only=True) as tx:
        return await tx.get_idempotency(owner, key) is None


# -- the header -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "key",
    ["a", "k" * 255, "!~", "0b5f1c5e-2f6a-4b8e-9d3c-7a1e6f4b2c90", "order:42/try=1"],
)
def test_valid_keys_are_taken_as_sent(key: str) -> None:
    assert parse_key([key]) == key


def test_no_header_is_no_key() -> None:
    assert parse_key([]) is None


@pytest.mark.parametrize(
    ("values", "code"),
    [
        ([""], "invalid_format"),
        (["k" * 256], "too_long"),
        (["with space"], "invalid_format"),
        (["tab\there"], "invalid_format"),
        (["del\x7f"], "invalid_format"),
        (["ключ".encode().decode("latin-1")], "invalid_format"),  # as the ASGI bytes arrive
        (["one", "two"], "invalid_format"),
        (["same", "same"], "invalid_format"),
    ],
)
def test_invalid_keys_are_400_pointing_at_the_header(values: list[str], code: str) -> None:
    with pytest.raises(InvalidRequest) as raised:
        parse_key(values)
    [error] = raised.value.errors
    assert error.pointer == "/headers/Idempotency-Key"
    assert error.code == code


def test_fingerprint_covers_method_target_and_body() -> None:
    base = fingerprint("POST", TARGET, BODY)
    assert base == fingerprint("post", TARGET, BODY)
    assert len(base) == 64
    others = {
        fingerprint("DELETE", TARGET, BODY),
        fingerprint("POST", TARGET + "/x", BODY),
        fingerprint("POST", TARGET + "?dryRun=true", BODY),
        fingerprint("POST", TARGET, BODY + b" "),
        fingerprint("POST", TARGET, b""),
        # The separator keeps the parts apart: moving bytes between them changes the input.
        fingerprint("POST", TARGET + "\0" + "x", b""),
    }
    assert base not in others
    assert len(others) == 6
    assert fingerprint("POST", TARGET + "\0" + "x", b"") != fingerprint("POST", TARGET, b"x")


# -- claim, store, replay ---------------------------------------------------------------------


async def test_first_request_claims_the_key_in_flight(
    service: IdempotencyService, store: SqlStore, clock: ManualClock
) -> None:
    request = request_for()
    assert await service.begin(request) is None

    record = await record_of(store)
    assert record.state is IdempotencyState.IN_FLIGHT
    assert (record.owner, record.key, record.method, record.path) == (
        OWNER,
        "key-1",
        "POST",
        TARGET,
    )
    assert record.fingerprint == request.fingerprint
    assert record.response_status is None
    assert record.created_at == clock.now()
    assert record.expires_at == clock.now() + RECORD_LIFETIME


async def test_while_in_flight_the_same_request_is_in_use_and_another_is_reused(
    service: IdempotencyService,
) -> None:
    await service.begin(request_for())

    with pytest.raises(IdempotencyKeyInUse):
        await service.begin(request_for())
    # A different request under the key is refused as such even before the first finishes.
    with pytest.raises(IdempotencyKeyReused):
        await service.begin(request_for(body=b'{"name":"other"}'))


async def test_a_stored_answer_is_replayed_byte_for_byte_with_only_its_own_headers(
    service: IdempotencyService, store: SqlStore
) -> None:
    request = request_for()
    await service.begin(request)
    assert await service.finish(request, ACCEPTED) is True
    assert (await record_of(store)).state is IdempotencyState.DONE

    replay = await service.begin(request_for())

    assert replay is not None
    assert replay.status == 202
    assert replay.body == ACCEPTED.body
    # Request-specific and framing headers are not part of the answer.
    assert replay.headers == (
        ("content-type", "application/json"),
        ("location", "/api/jobs/job_1"),
    )


async def test_repeated_list_headers_fold_into_one(service: IdempotencyService) -> None:
    request = request_for()
    await service.begin(request)
    answer = Answer(200, (("link", "</a>; rel=a"), ("Link", "</b>; rel=b")), b"{}")
    await service.finish(request, answer)

    replay = await service.begin(request)

    assert replay is not None
    assert replay.headers == (("link", "</a>; rel=a, </b>; rel=b"),)


@pytest.mark.parametrize(
    ("method", "target", "body"),
    [
        ("POST", TARGET, b'{"name":"other"}'),
        ("POST", TARGET, b'{"name": "before-upgrade"}'),  # same JSON, other bytes
        ("POST", "/api/v2/vps/vps_2/snapshots", BODY),
        ("POST", TARGET + "?x=1", BODY),
        ("DELETE", TARGET, BODY),
    ],
)
async def test_another_request_under_a_used_key_is_reused(
    service: IdempotencyService, method: str, target: str, body: bytes
) -> None:
    request = request_for()
    await service.begin(request)
    await service.finish(request, ACCEPTED)

    with pytest.raises(IdempotencyKeyReused) as raised:
        await service.begin(request_for(method=method, target=target, body=body))
    assert f"POST {TARGET}" in raised.value.detail


@pytest.mark.parametrize("status", [200, 201, 202, 204, 400, 404, 405, 409, 415, 422])
async def test_answers_that_decide_are_stored(
    service: IdempotencyService, store: SqlStore, status: int
) -> None:
    request = request_for()
    await service.begin(request)
    body = b"" if status == 204 else b'{"code":"x"}'

    assert await service.finish(request, Answer(status, (), body)) is True

    replay = await service.begin(request)
    assert replay == Answer(status, (), body)


@pytest.mark.parametrize("status", [401, 403, 408, 425, 429, 500, 502, 503, 504])
async def test_answers_that_say_not_now_free_the_key(
    service: IdempotencyService, store: SqlStore, status: int
) -> None:
    request = request_for()
    await service.begin(request)

    assert await service.finish(request, Answer(status, (), b'{"code":"x"}')) is False

    assert await is_free(store)
    assert await service.begin(request) is None  # the retry really runs


@pytest.mark.parametrize(
    "body",
    [
        b"\xff\xfe not utf-8",
        b'{"a":"\x00"}',
        b"x" * (MAX_STORED_BODY_BYTES + 1),
    ],
    ids=["not-utf8", "nul", "too-big"],
)
async def test_bodies_that_cannot_be_stored_as_they_are_free_the_key(
    service: IdempotencyService, store: SqlStore, body: bytes
) -> None:
    request = request_for()
    await service.begin(request)

    assert await service.finish(request, Answer(202, (), body)) is False
    assert await is_free(store)


async def test_the_largest_storable_body_round_trips(
    service: IdempotencyService, store: SqlStore
) -> None:
    request = request_for()
    await service.begin(request)
    body = ("é" * (MAX_STORED_BODY_BYTES // 2)).encode()
    assert len(body) == MAX_STORED_BODY_BYTES

    assert await service.finish(request, Answer(200, (), body)) is True
    replay = await service.begin(request)
    assert replay is not None
    assert replay.body == body


async def test_abandon_frees_the_key(service: IdempotencyService, store: SqlStore) -> None:
    request = request_for()
    await service.begin(request)

    await service.abandon(request)

    assert await is_free(store)
    assert await service.begin(request_for(body=b"{}")) is None


async def test_keys_are_per_owner(service: IdempotencyService) -> None:
    mine = request_for()
    await service.begin(mine)
    await service.finish(mine, ACCEPTED)

    theirs = request_for(owner=STRANGER, target="/api/v2/vps/vps_9/snapshots")
    assert await service.begin(theirs) is None
    assert await service.begin(mine) is not None  # mine is untouched


async def test_a_long_target_is_stored_cut_but_compared_exactly(
    service: IdempotencyService, store: SqlStore
) -> None:
    target = TARGET + "?q=" + "x" * 600
    request = request_for(target=target)
    await service.begin(request)
    await service.finish(request, ACCEPTED)

    assert (await record_of(store)).path == target[:500]
    assert await service.begin(request_for(target=target)) is not None
    with pytest.raises(IdempotencyKeyReused):
        await service.begin(request_for(target=target + "y"))


async def test_concurrent_first_requests_claim_the_key_once(
    service: IdempotencyService,
) -> None:
    results = await asyncio.gather(
        *(service.begin(request_for()) for _ in range(5)), return_exceptions=True
    )

    assert results.count(None) == 1
    assert all(isinstance(r, IdempotencyKeyInUse) for r in results if r is not None)


# -- expiry and housekeeping ------------------------------------------------------------------


async def test_a_record_replays_until_it_expires_then_the_key_is_new(
    service: IdempotencyService, store: SqlStore, clock: ManualClock
) -> None:
    request = request_for()
    await service.begin(request)
    await service.finish(request, ACCEPTED)

    clock.advance(seconds=RECORD_LIFETIME.total_seconds() - 1)
    assert await service.begin(request) is not None

    clock.advance(seconds=1)  # expires_at itself is expired
    other = request_for(body=b'{"name":"other"}')
    assert await service.begin(other) is None

    record = await record_of(store)
    assert record.state is IdempotencyState.IN_FLIGHT
    assert record.fingerprint == other.fingerprint
    assert record.expires_at == clock.now() + RECORD_LIFETIME


async def test_a_key_left_in_flight_by_a_dead_process_is_free_after_expiry(
    service: IdempotencyService, clock: ManualClock
) -> None:
    await service.begin(request_for())
    clock.advance(hours=23)
    with pytest.raises(IdempotencyKeyInUse):
        await service.begin(request_for())

    clock.advance(hours=1)
    assert await service.begin(request_for()) is None


async def test_concurrent_retries_of_an_expired_key_claim_it_once(
    service: IdempotencyService, clock: ManualClock
) -> None:
    request = request_for()
    await service.begin(request)
    await service.finish(request, ACCEPTED)
    clock.advance(hours=25)

    results = await asyncio.gather(
        *(service.begin(request_for()) for _ in range(5)), return_exceptions=True
    )

    assert results.count(None) == 1
    assert all(isinstance(r, IdempotencyKeyInUse) for r in results if r is not None)


async def test_purge_expired_removes_only_expired_records(
    service: IdempotencyService, store: SqlStore, clock: ManualClock
) -> None:
    old = request_for("old")
    await service.begin(old)
    await service.finish(old, ACCEPTED)
    await service.begin(request_for("old-in-flight", owner=STRANGER))
    clock.advance(hours=12)
    await service.begin(request_for("young"))
    clock.advance(hours=12)

    assert await service.purge_expired() == 2

    assert await is_free(store, "old")
    assert await is_free(store, "old-in-flight", owner=STRANGER)
    assert not await is_free(store, "young")
    assert await service.purge_expired() == 0
    clock.advance(hours=12)
    assert await service.purge_expired() == 1
