"""The cap on concurrent probes: who holds a place, who waits for one, and each namespace's share.

Places are handed out fairly across groups (namespaces): no group holds more than `group_limit`
places, so one tenant whose probes sleep to their deadline cannot take the whole cap, and a place
that frees up goes to the waiting group holding the fewest places (its longest waiter), so a
tenant with many Slots due does not push the others to the back of one long line. Within a group
the order is arrival order. A freed place is handed straight to its waiter, so no newcomer can take
it between the hand-over and that waiter's reconcile.

Background keys (a SlotImageCheck's probes) share the cap and the group shares but never go before a
foreground key (a Slot's probe): one takes a free place only while no foreground key waits for it, and
a freed place goes to a waiting foreground key first. No preemption: a background probe once started
keeps its place until it ends.

Each (tier, group) line is an insertion-ordered dict: joining, leaving and finding the head are O(1); a
hand-over looks at the head of each waiting line (O(groups)).
"""

from __future__ import annotations

import collections
import dataclasses
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)


@dataclasses.dataclass(frozen=True)
class CheckProbe:
    """A SlotImageCheck's probe of one Slot, as it holds or waits for a place (a background key)."""

    namespace: str
    check: str
    slot: str


# Who holds or waits for a place: a Slot's own probe (the Slot's (namespace, name)) or a check's probe.
ProbeKey = tuple[str, str] | CheckProbe


def namespace_of(key: ProbeKey) -> str:
    return key.namespace if isinstance(key, CheckProbe) else key[0]


def is_check_probe(key: ProbeKey) -> bool:
    return isinstance(key, CheckProbe)


def _one_group(key: Hashable) -> Hashable:
    return ""


def _foreground(key: Hashable) -> bool:
    return False


class Capacity(Generic[K]):
    def __init__(
        self,
        limit: int,
        *,
        group_limit: int | None = None,
        group: Callable[[K], Hashable] = _one_group,
        background: Callable[[K], bool] = _foreground,
    ) -> None:
        if limit < 1:
            raise ValueError(f"the cap must be at least 1, got {limit}")
        if group_limit is not None and group_limit < 1:
            raise ValueError(f"a group's share must be at least 1, got {group_limit}")
        self.limit = limit
        self.group_limit = min(group_limit or limit, limit)
        self._group = group
        self._background = background
        self._holders: dict[K, str] = {}  # key -> its probe Job's name ("" until created)
        self._held: collections.Counter[Hashable] = collections.Counter()  # group -> places held
        self._ahead: dict[K, int] = {}  # waiting key -> how many waited before it when it joined
        # (tier, group) -> key -> (joined, arrival number); tier 0 the foreground, 1 the background
        self._lines: dict[tuple[int, Hashable], dict[K, tuple[float, int]]] = {}
        self._waiting_background = 0
        self._arrivals = 0

    @property
    def running(self) -> int:
        return len(self._holders)

    @property
    def waiting(self) -> int:
        """Foreground keys waiting for a place (background keys wait behind them, counted apart)."""
        return len(self._ahead) - self._waiting_background

    @property
    def waiting_background(self) -> int:
        return self._waiting_background

    def holds(self, key: K) -> bool:
        return key in self._holders

    def is_waiting(self, key: K) -> bool:
        return key in self._ahead

    def job_of(self, key: K) -> str | None:
        """The probe Job that holds `key`'s place ("" when granted a place but not started yet); None: no place."""
        return self._holders.get(key)

    def held_by(self, group: Hashable) -> int:
        """Places the group holds now."""
        return self._held[group]

    def acquire(self, key: K, *, now: float) -> int | None:
        """Take a place (None), or wait in line: how many keys were ahead when `key` joined.

        Idempotent: a holder keeps its place, a waiter its turn (and the same answer: the line is
        not recounted as it moves). A free place is taken only if the key's group is below its
        share and no waiter that could take it came first.
        """
        if key in self._holders:
            return None
        if key in self._ahead:
            return self._ahead[key]
        group, tier = self._group(key), self._tier(key)
        free = self.running < self.limit and self._held[group] < self.group_limit
        if free and self._next_line(up_to=tier) is None:
            self._hold(key, "")
            return None
        ahead = len(self._ahead) if tier else self.waiting
        self._ahead[key] = ahead
        self._arrivals += 1
        self._waiting_background += tier
        self._lines.setdefault((tier, group), {})[key] = (now, self._arrivals)
        return ahead

    def adopt(self, key: K, job: str) -> None:
        """`key` has a probe running (found after a restart, or just created): it holds a place, even over the cap."""
        self._leave_line(key)
        self._hold(key, job)

    def release(self, key: K) -> list[K]:
        """`key` gives up its place or its turn; returns the waiters now handed a place (reconcile them)."""
        if key in self._holders:
            del self._holders[key]
            group = self._group(key)
            self._held[group] -= 1
            if self._held[group] <= 0:
                del self._held[group]
        self._leave_line(key)
        granted: list[K] = []
        while self.running < self.limit:
            line = self._next_line(up_to=1)
            if line is None:
                break
            head = next(iter(self._lines[line]))
            self._leave_line(head)
            self._hold(head, "")
            granted.append(head)
        return granted

    def oldest_wait(self, *, now: float) -> float:
        """Seconds the longest foreground waiter has waited (0 when none waits)."""
        heads = [next(iter(line.values()))[0] for (tier, _), line in self._lines.items() if not tier]
        return max(now - min(heads), 0.0) if heads else 0.0

    def _hold(self, key: K, job: str) -> None:
        if key not in self._holders:
            self._held[self._group(key)] += 1
        self._holders[key] = job

    def _tier(self, key: K) -> int:
        return 1 if self._background(key) else 0

    def _leave_line(self, key: K) -> None:
        if self._ahead.pop(key, None) is None:
            return
        tier = self._tier(key)
        self._waiting_background -= tier
        line_id = (tier, self._group(key))
        line = self._lines[line_id]
        del line[key]
        if not line:
            del self._lines[line_id]

    def _next_line(self, *, up_to: int) -> tuple[int, Hashable] | None:
        """Where a free place goes: the foreground first; then the waiting group below its share holding fewest,
        then waiting longest. Only lines of tier `up_to` or lower are considered."""
        best: tuple[int, int, int] | None = None
        chosen: tuple[int, Hashable] | None = None
        for (tier, group), line in self._lines.items():
            if tier > up_to or self._held[group] >= self.group_limit:
                continue
            rank = (tier, self._held[group], next(iter(line.values()))[1])
            if best is None or rank < best:
                best, chosen = rank, (tier, group)
        return chosen
