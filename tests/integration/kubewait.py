"""Waiting helpers for integration tests: poll a condition against a deadline, never sleep blindly.

Controllers (Job, GC, TTL, the node simulator) act asynchronously, so a test
asserts on "eventually" with a bounded wait and, on timeout, reports what it last
saw, which is usually the whole diagnosis.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

from kubernetes.client.exceptions import ApiException

T = TypeVar("T")


@dataclasses.dataclass(frozen=True)
class NotYet:
    """A falsy predicate result that still says what was observed (shown on timeout)."""

    observed: Any

    def __bool__(self) -> bool:
        return False

    def __repr__(self) -> str:
        return repr(self.observed)


def wait_for(
    predicate: Callable[[], T | NotYet],
    *,
    timeout: float,
    interval: float = 0.2,
    message: str,
    describe: Callable[[], object] | None = None,
) -> T:
    """Call `predicate` until it returns something truthy and return that; AssertionError at the deadline.

    The error carries `message` and the last value the predicate returned (return
    `NotYet(observation)` to be falsy but informative), or what `describe()` returns
    at that moment when given (for predicates that only answer True/False).
    """
    deadline = time.monotonic() + timeout
    pause = threading.Event()  # never set: its wait() is an interruptible pause between polls
    last: T | NotYet | None = None
    while True:
        last = predicate()
        if last and not isinstance(last, NotYet):
            return last
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            observed = describe() if describe is not None else repr(last)
            raise AssertionError(f"{message} (not within {timeout:g}s; last observed: {observed})")
        pause.wait(min(interval, remaining))


def read_or_none(read: Callable[..., T], *args: Any, **kwargs: Any) -> T | None:
    """`read(*args)` or None if the object does not exist (404)."""
    try:
        return read(*args, **kwargs)
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise
