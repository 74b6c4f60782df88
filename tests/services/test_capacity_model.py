"""The capacity file's pydantic model: cases beyond tests/services/test_capacity.py, each
answered with the file, the key (with its location in arrays) and the reader's message."""

from __future__ import annotations

from pathlib import Path

import pytest

from vpsnap.capacity_config import CapacityConfigError, load_capacity_config

_PRICE = '{ amount = "1.00", currencyCode = "EUR", billingCycle = "monthly" }'


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('defaultSnapshotSlots = "3"', "defaultSnapshotSlots: must be an integer, not a string"),
        ("plans = [1]", "plans[0]: must be a table, not an integer"),
        (
            "[snapshotSlots]\nmin = 0\nmax = 3\nunitPrice = 5",
            "snapshotSlots.unitPrice: must be a table",
        ),
        (
            f'[snapshotSlots]\nlabel = ""\nmin = 0\nmax = 3\nunitPrice = {_PRICE}',
            "snapshotSlots.label: must be a non-empty string",
        ),
        (
            f'[[plans]]\nid = "a"\nname = "A"\nprice = {_PRICE}\n[[plans]]\nid = "b"\nname = "B"\nprice = {_PRICE}\nextra = 1',
            "plans[1].extra: unknown key (allowed here: id, name, price, snapshotSlots)",
        ),
        (
            '[[plans]]\nid = "a"\nname = "A"\nprice = { amount = true, currencyCode = "EUR", billingCycle = "monthly" }',
            'plans[0].price.amount: must be a number or a string like "1.00", not a boolean',
        ),
        (
            "[snapshotSlots]\nmin = 0\nmax = 3\nstep = 0\nunitPrice = 5",
            "snapshotSlots.step: must be at least 1",
        ),
    ],
)
def test_more_invalid_files(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "capacity.toml"
    path.write_text(text)
    with pytest.raises(CapacityConfigError) as caught:
        load_capacity_config(path)
    assert str(caught.value).startswith(f"{path}: {message}"), caught.value


def test_a_valid_file_builds_the_configuration(tmp_path: Path) -> None:
    path = tmp_path / "capacity.toml"
    path.write_text(
        "defaultSnapshotSlots = 1\n"
        f"[snapshotSlots]\nmin = 0\nmax = 10\nstep = 2\nunitPrice = {_PRICE}\n"
        f'[[plans]]\nid = "small"\nname = "Small"\nsnapshotSlots = 2\nprice = {_PRICE}\n'
    )
    config = load_capacity_config(path)
    assert config.default_snapshot_slots == 1
    assert config.snapshot_slots is not None
    assert (config.snapshot_slots.min, config.snapshot_slots.max) == (0, 10)
    assert config.snapshot_slots.label == "Snapshot slots"
    assert [(p.id, p.snapshot_slots) for p in config.plans] == [("small", 2)]
    assert config.source == str(path)
