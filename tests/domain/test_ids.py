"""Ids (``vpsnap.domain.ids``): the public shape, ascending within the process (python-ulid's
monotonic generator), unique across threads."""

from __future__ import annotations

import threading

from vpsnap.domain.ids import is_valid_id, new_id, new_ids


def test_ids_have_the_public_shape_and_ascend_across_both_calls() -> None:
    made = [*new_ids("aud", 50), new_id("aud"), *new_ids("aud", 3), new_id("aud")]
    assert all(is_valid_id("aud", x) for x in made)
    assert made == sorted(made)
    assert len(set(made)) == len(made)
    assert new_ids("job", 0) == []


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
    # Unique. Not ordered between threads (python-ulid reads the clock before taking its
    # lock); the order the audit trail pages by is that of one process's event loop.
    assert len(set(everything)) == len(everything)
