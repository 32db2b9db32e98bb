"""The concurrency cap (runtime/capacity.py): places, the line, hand-over in arrival order."""

from __future__ import annotations

import pytest
from slot_operator.runtime.capacity import Capacity


def test_places_are_taken_until_the_cap_then_keys_wait_with_their_position() -> None:
    cap: Capacity[str] = Capacity(2)
    assert cap.acquire("a", now=1) is None
    assert cap.acquire("b", now=2) is None
    assert cap.acquire("c", now=3) == 0
    assert cap.acquire("d", now=4) == 1
    assert (cap.running, cap.waiting) == (2, 2)
    assert cap.holds("a")
    assert cap.is_waiting("d")


def test_acquire_is_idempotent_for_holders_and_waiters() -> None:
    cap: Capacity[str] = Capacity(1)
    cap.acquire("a", now=1)
    cap.acquire("b", now=2)
    assert cap.acquire("a", now=9) is None
    assert cap.acquire("b", now=9) == 0  # still waiting, and the same answer
    cap.acquire("c", now=10)
    assert cap.acquire("c", now=11) == 1
    assert (cap.running, cap.waiting) == (1, 2)


def test_a_freed_place_goes_to_the_longest_waiter_not_a_newcomer() -> None:
    cap: Capacity[str] = Capacity(1)
    cap.acquire("a", now=1)
    cap.acquire("b", now=2)
    cap.acquire("c", now=3)
    assert cap.release("a") == ["b"]
    assert cap.holds("b")
    assert cap.acquire("newcomer", now=4) == 1  # behind c
    assert cap.release("b") == ["c"]
    assert cap.release("c") == ["newcomer"]


def test_leaving_the_line_skips_the_key_without_a_rescan() -> None:
    cap: Capacity[str] = Capacity(1)
    cap.acquire("a", now=1)
    for key, when in (("b", 2), ("c", 3), ("d", 4)):
        cap.acquire(key, now=when)
    assert cap.release("c") == []  # c gave up its turn (suspended, deleted, no longer due)
    assert cap.waiting == 2
    assert cap.release("a") == ["b"]
    assert cap.release("b") == ["d"]


def test_a_key_that_leaves_and_rejoins_goes_to_the_back() -> None:
    cap: Capacity[str] = Capacity(1)
    cap.acquire("a", now=1)
    cap.acquire("b", now=2)
    cap.acquire("c", now=3)
    cap.release("b")
    assert cap.acquire("b", now=4) == 1
    assert cap.release("a") == ["c"]
    assert cap.release("c") == ["b"]


def test_adopted_probes_count_even_over_the_cap() -> None:
    """Probes found running after a restart (or created just before a lower cap) hold places until they end."""
    cap: Capacity[str] = Capacity(1)
    cap.adopt("a", "a-probe")
    cap.adopt("b", "b-probe")
    assert cap.running == 2
    assert cap.acquire("c", now=1) == 0
    assert cap.release("a") == []  # still one over the cap
    assert cap.release("b") == ["c"]


def test_adopting_a_waiter_takes_it_out_of_the_line() -> None:
    cap: Capacity[str] = Capacity(1)
    cap.acquire("a", now=1)
    cap.acquire("b", now=2)
    cap.adopt("b", "b-probe")  # its Job turned up (another replica created it)
    assert (cap.running, cap.waiting) == (2, 0)
    assert cap.release("a") == []


def test_several_places_freed_at_once_go_to_as_many_waiters() -> None:
    cap: Capacity[str] = Capacity(3)
    for key in "abc":
        cap.acquire(key, now=0)
    for when, key in enumerate("defg", start=1):
        cap.acquire(key, now=when)
    cap.limit = cap.group_limit = 5  # (only the constructor sets them in the operator; here two places free at once)
    assert cap.release("a") == ["d", "e", "f"]
    assert cap.waiting == 1


def test_oldest_wait_tracks_the_head_of_the_line() -> None:
    cap: Capacity[str] = Capacity(1)
    assert cap.oldest_wait(now=100) == 0
    cap.acquire("a", now=1)
    cap.acquire("b", now=10)
    cap.acquire("c", now=20)
    assert cap.oldest_wait(now=25) == 15
    cap.release("b")
    assert cap.oldest_wait(now=25) == 5


def test_waiters_leaving_and_rejoining_keep_their_order() -> None:
    cap: Capacity[int] = Capacity(1)
    cap.acquire(-1, now=0)
    for key in range(1000):
        cap.acquire(key, now=key)
    for key in range(0, 1000, 2):
        cap.release(key)
        cap.acquire(key, now=1000 + key)  # back of the line
    assert cap.waiting == 1000
    assert cap.release(-1) == [1]
    assert cap.release(1) == [3]


# --- each namespace's share ------------------------------------------------------------------


def _namespaced(limit: int, share: int) -> Capacity[tuple[str, str]]:
    return Capacity(limit, group_limit=share, group=lambda key: key[0])


def test_a_namespace_never_holds_more_than_its_share() -> None:
    cap = _namespaced(4, 2)
    assert cap.acquire(("a", "1"), now=1) is None
    assert cap.acquire(("a", "2"), now=2) is None
    assert cap.acquire(("a", "3"), now=3) == 0  # its share is taken: it waits though places are free
    assert cap.acquire(("b", "1"), now=4) is None  # another namespace still gets a free place at once
    assert (cap.running, cap.held_by("a"), cap.held_by("b")) == (3, 2, 1)


def test_sleeping_probes_of_one_namespace_leave_the_rest_of_the_cap_to_the_others() -> None:
    cap = _namespaced(4, 2)
    for n in range(10):
        cap.acquire(("sleepy", str(n)), now=n)
    assert cap.held_by("sleepy") == 2
    assert cap.acquire(("busy", "1"), now=20) is None
    assert cap.acquire(("busy", "2"), now=21) is None
    assert cap.acquire(("busy", "3"), now=22) == 8
    assert cap.release(("busy", "1")) == [("busy", "3")]  # the sleepy waiters are at their share


def test_a_freed_place_goes_to_the_namespace_holding_the_fewest() -> None:
    cap = _namespaced(3, 3)
    for n in range(3):
        cap.acquire(("big", str(n)), now=n)
    for n in range(3, 6):
        cap.acquire(("big", str(n)), now=n)  # waiting first
    cap.acquire(("small", "1"), now=10)
    assert cap.release(("big", "0")) == [("small", "1")]  # small holds none: it goes before big's older waiters
    assert cap.release(("big", "1")) == [("big", "3")]


def test_a_newcomer_waits_behind_a_waiter_that_could_take_the_place() -> None:
    cap = _namespaced(2, 2)
    cap.acquire(("a", "1"), now=1)
    cap.acquire(("a", "2"), now=2)
    cap.acquire(("a", "3"), now=3)
    cap.adopt(("a", "4"), "job")  # over the cap, found after a restart
    assert cap.release(("a", "1")) == []
    assert cap.acquire(("b", "1"), now=4) == 1  # a's waiter is next, not b
    assert cap.release(("a", "2")) == [("b", "1")]  # b holds fewest


def test_the_share_is_at_most_the_cap() -> None:
    assert _namespaced(2, 10).group_limit == 2
    with pytest.raises(ValueError, match="share must be at least 1"):
        _namespaced(2, 0)


def test_the_cap_must_be_positive() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        Capacity(0)


# --- the background tier: a SlotImageCheck's probes go after every Slot probe -------------------------


def tiered(limit: int, group_limit: int | None = None) -> Capacity[str]:
    """Keys `check:*` are background (a check's probes); the group is the part before the first '/'."""
    return Capacity(limit, group_limit=group_limit, group=lambda key: key.split("/")[0].split(":")[-1],
                    background=lambda key: key.startswith("check:"))  # fmt: skip


def test_a_background_key_takes_a_free_place_only_while_no_foreground_key_waits() -> None:
    cap = tiered(2)
    assert cap.acquire("check:a/1", now=1) is None  # nobody else wanted it
    assert cap.acquire("a/slot-1", now=2) is None
    assert cap.acquire("a/slot-2", now=3) == 0  # full: the Slot waits
    assert cap.acquire("check:a/2", now=4) == 1  # behind the Slot
    assert (cap.waiting, cap.waiting_background) == (1, 1)
    assert cap.release("check:a/1") == ["a/slot-2"]  # the freed place goes to the Slot, not the older check probe
    assert cap.release("a/slot-1") == ["check:a/2"]  # then to the check


def test_a_foreground_key_goes_before_background_keys_that_waited_longer() -> None:
    cap = tiered(1)
    cap.acquire("a/slot-1", now=1)
    for n in range(5):
        cap.acquire(f"check:a/{n}", now=2 + n)
    assert cap.acquire("a/slot-2", now=10) == 0  # no foreground key ahead of it
    assert cap.release("a/slot-1") == ["a/slot-2"]
    assert cap.oldest_wait(now=20) == 0  # the background line is not the Slots' wait


def test_a_free_place_is_not_taken_by_a_background_key_while_a_slot_of_another_namespace_waits() -> None:
    cap = tiered(3, group_limit=2)
    cap.acquire("a/slot-1", now=1)
    cap.acquire("a/slot-2", now=2)
    assert cap.acquire("a/slot-3", now=3) == 0  # namespace a is at its share
    assert cap.acquire("check:b/1", now=4) is None  # b is below its share and no Slot of b waits: it may
    assert cap.acquire("check:a/1", now=5) == 1  # a's check waits behind a's Slot probe
    assert cap.release("a/slot-1") == ["a/slot-3"]
    assert cap.release("check:b/1") == []  # a is at its share again: its check probe keeps waiting
    assert cap.release("a/slot-2") == ["check:a/1"]
