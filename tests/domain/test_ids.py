"""Ids: the process's monotonic ULID sequence (``vpsnap.domain.ids``)."""

from __future__ import annotations

import random
import threading

import pytest
from ulid import ULID

from vpsnap.domain import ids
from vpsnap.domain.ids import is_valid_id, new_id, new_ids


def _value(identifier: str) -> int:
    return int(ULID.from_str(identifier.split("_", 1)[1].upper()))


def test_the_encoding_is_python_ulids() -> None:
    rng = random.Random(15)
    for value in [0, 1, (1 << 128) - 1, *(rng.getrandbits(128) for _ in range(2000))]:
        assert ids._encode(value) == str(ULID.from_int(value)).lower()


def test_ids_have_the_public_shape_and_ascend_across_both_calls() -> None:
    made = [*new_ids("aud", 50), new_id("aud"), *new_ids("aud", 3), new_id("aud")]
    assert all(is_valid_id("aud", x) for x in made)
    assert made == sorted(made)
    assert len(set(made)) == len(made)
    assert new_ids("job", 0) == []


def test_a_run_is_consecutive_across_the_low_bits_wrapping(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The run starts 4 below a 2**20 boundary: the shared 22 characters change within it.
    moment = 1_800_000_000_000
    monkeypatch.setattr(ids.time, "time_ns", lambda: moment * 1_000_000)
    monkeypatch.setattr(ids, "_sequence", ids._Monotonic())
    ids._sequence._ms, ids._sequence._random = moment, (1 << 20) - 5
    made = new_ids("job", 12)
    values = [_value(x) for x in made]
    assert values == list(range(values[0], values[0] + 12))
    assert values[0] >> 80 == moment
    assert values[0] & ((1 << 80) - 1) == (1 << 20) - 4
    # The next id of the same millisecond continues the sequence.
    assert _value(new_id("job")) == values[-1] + 1


def test_a_clock_stepping_back_or_an_exhausted_millisecond_never_goes_backwards(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    now = [2_000_000_000_000]
    monkeypatch.setattr(ids.time, "time_ns", lambda: now[0] * 1_000_000)
    monkeypatch.setattr(ids, "_sequence", ids._Monotonic())
    first = new_id("x")
    now[0] -= 5_000  # the wall clock steps back 5 s
    second = new_id("x")
    assert second > first
    # The stepped-back millisecond is not taken: the sequence stays in the last one.
    assert _value(second) >> 80 == _value(first) >> 80
    ids._sequence._random = (1 << 80) - 2  # one value left in this millisecond, two wanted
    third, fourth = new_ids("x", 2)
    assert first < second < third < fourth
    assert _value(third) >> 80 == (_value(second) >> 80) + 1


def test_threads_never_make_the_same_id() -> None:
    made: list[list[str]] = [[] for _ in range(4)]

    def work(into: list[str]) -> None:
        for _ in range(500):
            into.append(new_id("t"))
            into.extend(new_ids("t", 3))

    threads = [threading.Thread(target=work, args=(m,)) for m in made]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    everything = [x for m in made for x in m]
    assert len(set(everything)) == len(everything)
    for m in made:
        assert m == sorted(m)
