"""A de-duplicating work queue of keys, with delayed adds and per-key retry backoff (client-go's workqueue).

- A key is handed to at most one worker at a time; adding it while it is being
  processed marks it dirty and it is handed out again once `done` is called.
- `add_after` keeps only the earliest pending wake-up per key: one TimerHandle
  per key, not a task or a finalizer per object (unlike kopf timers).
- The queue owns retries (client-go's rate-limited queue): `add_rate_limited` adds a
  key after a delay that doubles with each retry of it (`num_requeues`), until
  `forget` says it succeeded; `discard` drops a key's pending wake-up (it is gone).
- `add(key, urgent=True)` puts the key in a line served before the other: news of a running probe,
  whose verdict waits for it, does not queue behind a burst of new or changed Slots (controller-runtime's
  priority queue does the same for its initial listing). An urgent add of a key already in the other
  line moves it over; a key is in one line at most.
- `queued_at(key)`, while a worker has the key: when the work it was handed for first arrived
  (the earliest add since it was last handed out, a dirty add included), for per-verdict timing.
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import Hashable
from typing import Generic, TypeVar

from slot_operator.logic import backoff

K = TypeVar("K", bound=Hashable)

# Wake-ups further out are re-armed in steps, so a wall-clock jump is noticed within this bound.
MAX_DELAY = 3600.0


# Retry delays of a key whose reconcile failed: a conflict clears after a fresh read, an API error may take longer.
RETRY_BASE, RETRY_MAX = 0.05, 60.0


class WorkQueue(Generic[K]):
    def __init__(self, *, retry_base: float = RETRY_BASE, retry_max: float = RETRY_MAX) -> None:
        self._retry_base, self._retry_max = retry_base, retry_max
        self._requeues: dict[K, int] = {}
        self._ready: collections.deque[K] = collections.deque()
        self._urgent: collections.deque[K] = collections.deque()  # served first
        self._queued: dict[K, bool] = {}  # key in a line -> whether that is the urgent one
        self._since: dict[K, float] = {}  # ready key -> when it joined the line (time.monotonic)
        self._processing: set[K] = set()
        self._dirty: dict[K, tuple[float, bool]] = {}  # key changed while processed -> when it first did, urgent
        self._taken: dict[K, float] = {}  # key being processed -> when its work joined the line
        self._timers: dict[K, asyncio.TimerHandle] = {}
        self._wakeup = asyncio.Event()

    def __len__(self) -> int:
        return len(self._queued)

    def add(self, key: K, *, urgent: bool = False) -> None:
        if key in self._processing:
            since, was_urgent = self._dirty.get(key) or (time.monotonic(), False)
            self._dirty[key] = (since, was_urgent or urgent)
            return
        queued = self._queued.get(key)
        if queued is None:
            self._join(key, time.monotonic(), urgent=urgent)
        elif urgent and not queued:
            self._ready.remove(key)  # O(line), and only when a waiting Slot's probe has news: rare
            self._queued[key] = True
            self._urgent.append(key)

    def _join(self, key: K, since: float, *, urgent: bool) -> None:
        self._queued[key] = urgent
        self._since[key] = since
        (self._urgent if urgent else self._ready).append(key)
        self._wakeup.set()

    def add_after(self, key: K, delay: float) -> None:
        """Add `key` after `delay` seconds, unless an earlier wake-up is already pending."""
        if delay <= 0:
            self.add(key)
            return
        loop = asyncio.get_running_loop()
        when = loop.time() + min(delay, MAX_DELAY)
        existing = self._timers.get(key)
        if existing is not None and not existing.cancelled() and existing.when() <= when:
            return
        if existing is not None:
            existing.cancel()
        self._timers[key] = loop.call_at(when, self._fire, key)

    def _fire(self, key: K) -> None:
        self._timers.pop(key, None)
        self.add(key)

    def add_rate_limited(self, key: K) -> float:
        """Add `key` again after its next retry delay (doubling per retry since the last `forget`); the delay."""
        self._requeues[key] = self._requeues.get(key, 0) + 1
        delay = backoff.exponential(self._requeues[key], base=self._retry_base, cap=self._retry_max)
        self.add_after(key, delay)
        return delay

    def num_requeues(self, key: K) -> int:
        """Retries of `key` since it last succeeded."""
        return self._requeues.get(key, 0)

    def forget(self, key: K) -> None:
        """`key` succeeded: its next failure starts again from the base delay."""
        self._requeues.pop(key, None)

    def discard(self, key: K) -> None:
        """Drop `key`'s pending wake-up and retry count (its object is gone)."""
        self._requeues.pop(key, None)
        timer = self._timers.pop(key, None)
        if timer is not None:
            timer.cancel()

    async def get(self) -> K:
        while not self._queued:
            self._wakeup.clear()
            await self._wakeup.wait()
        key = self._urgent.popleft() if self._urgent else self._ready.popleft()
        del self._queued[key]
        self._taken[key] = self._since.pop(key)
        self._processing.add(key)
        return key

    def queued_at(self, key: K) -> float | None:
        """While a worker has `key`: when the work it was handed for joined the line (time.monotonic())."""
        return self._taken.get(key)

    def oldest_wait(self, *, now: float) -> float:
        """Seconds the first ready key has waited for a worker (0 when none waits); `now` is time.monotonic()."""
        heads = [self._since[line[0]] for line in (self._urgent, self._ready) if line]
        return max(now - min(heads), 0.0) if heads else 0.0

    def done(self, key: K) -> None:
        self._processing.discard(key)
        self._taken.pop(key, None)
        dirty = self._dirty.pop(key, None)
        if dirty is not None and key not in self._queued:
            self._join(key, dirty[0], urgent=dirty[1])

    def close(self) -> None:
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
