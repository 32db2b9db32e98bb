"""Shared by the reconcile tests: a fresh harness per test (tests/operator_harness.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.operator_harness import Harness


@pytest.fixture
async def h() -> AsyncIterator[Harness]:
    harness = Harness()
    yield harness
    await harness.close()
