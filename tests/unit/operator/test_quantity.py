"""Kubernetes quantities, as far as comparing a request with a limit needs them."""

from __future__ import annotations

import decimal

import pytest
from slot_operator.logic import quantity


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("500m", "0.5"),
        ("2", "2"),
        ("1.5", "1.5"),
        ("256Mi", str(256 * 2**20)),
        ("1Gi", str(2**30)),
        ("1G", "1000000000"),
        ("1e3", "1000"),
        ("12E-1", "1.2"),
        (" 10k ", "10000"),
        (".5", "0.5"),
        (64, "64"),
    ],
)
def test_values(text: object, value: str) -> None:
    assert quantity.parse(text) == decimal.Decimal(value)


@pytest.mark.parametrize("text", ["", "Mi", "1 Gi", "1.2.3", "10x", "1Gib", "-"])
def test_not_a_quantity_names_the_text(text: str) -> None:
    with pytest.raises(ValueError, match="is not a Kubernetes quantity"):
        quantity.parse(text)


def test_order_across_suffixes() -> None:
    assert quantity.parse("1Gi") > quantity.parse("1G") > quantity.parse("953Mi")
    assert quantity.parse("100m") < quantity.parse("1")
