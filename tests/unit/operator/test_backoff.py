"""The operator's one exponential backoff (logic/backoff.py)."""

from __future__ import annotations

import pytest
from slot_operator.logic import backoff


@pytest.mark.parametrize(
    ("attempt", "delay"), [(-1, 0.5), (0, 0.5), (1, 0.5), (2, 1.0), (3, 2.0), (6, 16.0), (7, 20.0)]
)
def test_doubles_from_the_base_up_to_the_cap(attempt: int, delay: float) -> None:
    assert backoff.exponential(attempt, base=0.5, cap=20.0) == delay


def test_huge_attempt_counts_stay_at_the_cap() -> None:
    assert backoff.exponential(10**9, base=1.0, cap=60.0) == 60.0


def test_jitter_stays_between_half_and_the_whole() -> None:
    draws = [backoff.jittered(8.0) for _ in range(200)]
    assert all(4.0 <= draw <= 8.0 for draw in draws)
    assert len(set(draws)) > 1
