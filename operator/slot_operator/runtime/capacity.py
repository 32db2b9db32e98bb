"""The global cap on concurrent probes: who holds a place, and who waits for one, in arrival order.

A place that frees up is handed straight to the longest waiter, so no newcomer can take it
between the hand-over and that waiter's reconcile. Every operation is O(log n) in the number
of waiters (a heap; leaving the line is a lazy deletion), so a long queue costs nothing per move.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)


class Capacity(Generic[K]):
    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError(f"the cap must be at least 1, got {limit}")
        self.limit = limit
        self._holders: dict[K, str] = {}  # key -> its probe Job's name ("" until created)
        self._ticket: dict[K, int] = {}  # waiting key -> its arrival number (identifies its live heap entry)
        self._ahead: dict[K, int] = {}  # waiting key -> how many waited before it when it joined
        self._line: list[tuple[float, int, K]] = []  # (joined, arrival number, key); stale entries skipped
        self._arrivals = itertools.count()

    @property
    def running(self) -> int:
        return len(self._holders)

    @property
    def waiting(self) -> int:
        return len(self._ticket)

    def holds(self, key: K) -> bool:
        return key in self._holders

    def is_waiting(self, key: K) -> bool:
        return key in self._ticket

    def acquire(self, key: K, *, now: float) -> int | None:
        """Take a place (None), or wait in line: how many keys were ahead when `key` joined.

        Idempotent: a holder keeps its place, a waiter its turn (and the same answer: the line is
        not recounted as it moves).
        """
        if key in self._holders:
            return None
        if key in self._ticket:
            return self._ahead[key]
        if len(self._holders) < self.limit and not self._ticket:
            self._holders[key] = ""
            return None
        ahead = len(self._ticket)
        ticket = next(self._arrivals)
        self._ticket[key] = ticket
        self._ahead[key] = ahead
        heapq.heappush(self._line, (now, ticket, key))
        return ahead

    def adopt(self, key: K, job: str) -> None:
        """`key` has a probe running (found after a restart, or just created): it holds a place, even over the cap."""
        self._ticket.pop(key, None)
        self._ahead.pop(key, None)
        self._holders[key] = job

    def release(self, key: K) -> list[K]:
        """`key` gives up its place or its turn; returns the waiters now handed a place (reconcile them)."""
        self._holders.pop(key, None)
        self._ticket.pop(key, None)
        self._ahead.pop(key, None)
        granted: list[K] = []
        while len(self._holders) < self.limit and self._ticket:
            _, ticket, head = heapq.heappop(self._line)
            if self._ticket.get(head) != ticket:
                continue  # left the line (or rejoined later): a stale entry
            del self._ticket[head]
            del self._ahead[head]
            self._holders[head] = ""
            granted.append(head)
        self._compact()
        return granted

    def oldest_wait(self, *, now: float) -> float:
        """Seconds the longest waiter has waited (0 when nobody waits)."""
        while self._line and self._ticket.get(self._line[0][2]) != self._line[0][1]:
            heapq.heappop(self._line)
        return max(now - self._line[0][0], 0.0) if self._line else 0.0

    def _compact(self) -> None:
        # Stale entries are dropped as they reach the head; rebuild when they outnumber live ones.
        if len(self._line) > 64 and len(self._line) > 2 * len(self._ticket):
            self._line = [entry for entry in self._line if self._ticket.get(entry[2]) == entry[1]]
            heapq.heapify(self._line)
