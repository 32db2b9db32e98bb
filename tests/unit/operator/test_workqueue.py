"""The de-duplicating work queue with delayed adds (runtime/workqueue.py).

No sleeps: every wait is a `queue.get()` under an `asyncio.wait_for` deadline, which is
exactly the behaviour under test (a key is handed out, or it is not, by a deadline).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest
from slot_operator.runtime import workqueue
from slot_operator.runtime.workqueue import WorkQueue

SOON = 0.05  # a delayed add
SHORT = 0.01  # "not yet": a deadline well before SOON
LONG = 2.0  # "eventually": generous, only reached on failure


@pytest.fixture
async def queue() -> AsyncIterator[WorkQueue[str]]:
    q: WorkQueue[str] = WorkQueue()
    yield q
    q.close()


async def get(q: WorkQueue[str], deadline: float = LONG) -> str:
    return await asyncio.wait_for(q.get(), deadline)


async def assert_empty(q: WorkQueue[str], deadline: float = SHORT) -> None:
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(q.get(), deadline)


async def processing(q: WorkQueue[str], key: str) -> None:
    """`key` added and handed to a worker, which holds it (not done yet)."""
    q.add(key)
    assert await get(q) == key


async def handed_out_once_more(q: WorkQueue[str], key: str) -> None:
    """`key` is handed out again, and once it is done, nothing more."""
    assert await get(q) == key
    q.done(key)
    await assert_empty(q)


async def test_add_then_get(queue: WorkQueue[str]) -> None:
    queue.add("a")
    assert len(queue) == 1
    assert await get(queue) == "a"
    assert len(queue) == 0


async def test_fifo_order(queue: WorkQueue[str]) -> None:
    for key in ("a", "b", "c"):
        queue.add(key)
    assert [await get(queue), await get(queue), await get(queue)] == ["a", "b", "c"]


async def test_get_on_empty_queue_waits(queue: WorkQueue[str]) -> None:
    await assert_empty(queue)


async def test_duplicate_adds_are_collapsed(queue: WorkQueue[str]) -> None:
    queue.add("a")
    queue.add("a")
    queue.add("b")
    queue.add("a")
    assert len(queue) == 2
    assert await get(queue) == "a"
    assert await get(queue) == "b"
    await assert_empty(queue)


async def test_waiting_getter_is_woken_by_add(queue: WorkQueue[str]) -> None:
    waiter = asyncio.ensure_future(get(queue))
    await assert_empty(queue)  # gives the waiter time to block; it must still be waiting
    assert not waiter.done()
    queue.add("a")
    assert await asyncio.wait_for(waiter, LONG) == "a"


async def test_key_in_processing_is_not_handed_out_twice(queue: WorkQueue[str]) -> None:
    await processing(queue, "a")
    queue.add("a")  # changed while a worker has it: dirty, not queued
    assert len(queue) == 0
    await assert_empty(queue)
    queue.done("a")
    await handed_out_once_more(queue, "a")


async def test_dirty_key_is_requeued_once(queue: WorkQueue[str]) -> None:
    await processing(queue, "a")
    queue.add("a")
    queue.add("a")
    queue.done("a")
    assert len(queue) == 1
    await handed_out_once_more(queue, "a")


async def test_done_without_changes_does_not_requeue(queue: WorkQueue[str]) -> None:
    await processing(queue, "a")
    queue.done("a")
    await assert_empty(queue)
    await processing(queue, "a")


async def test_other_keys_flow_while_one_is_processing(queue: WorkQueue[str]) -> None:
    await processing(queue, "a")
    queue.add("a")
    queue.add("b")
    assert await get(queue) == "b"
    await assert_empty(queue)


async def test_concurrent_workers_get_distinct_keys(queue: WorkQueue[str]) -> None:
    workers = [asyncio.ensure_future(get(queue)) for _ in range(3)]
    await assert_empty(queue)
    queue.add("a")
    queue.add("b")
    queue.add("c")
    assert sorted(await asyncio.wait_for(asyncio.gather(*workers), LONG)) == ["a", "b", "c"]


async def test_add_after_is_not_ready_before_its_delay(queue: WorkQueue[str]) -> None:
    queue.add_after("a", SOON * 4)
    await assert_empty(queue, SHORT)
    assert await get(queue) == "a"


async def test_add_after_zero_or_negative_is_immediate(queue: WorkQueue[str]) -> None:
    queue.add_after("a", 0)
    queue.add_after("b", -5)
    assert len(queue) == 2
    assert await get(queue, SHORT) == "a"
    assert await get(queue, SHORT) == "b"


async def test_add_after_keeps_the_earliest_wake_up(queue: WorkQueue[str]) -> None:
    queue.add_after("a", 60)
    queue.add_after("a", SOON)  # earlier: replaces the 60 s one
    assert await get(queue, SOON * 4) == "a"
    queue.done("a")
    queue.add_after("b", SOON)
    queue.add_after("b", SOON * 6)  # later: ignored, must not postpone the earlier wake-up
    assert await get(queue, SOON * 4) == "b"
    queue.done("b")
    # The later wake-up for b was dropped: nothing more arrives by well after it would have fired.
    await assert_empty(queue, SOON * 10)


async def test_replaced_wake_up_does_not_fire_as_well(queue: WorkQueue[str]) -> None:
    queue.add_after("a", SOON * 6)
    queue.add_after("a", SOON)  # replaces the later one: one wake-up per key
    assert await get(queue, SOON * 4) == "a"
    queue.done("a")
    await assert_empty(queue, SOON * 10)


async def test_add_after_for_a_queued_key_still_fires_later(queue: WorkQueue[str]) -> None:
    queue.add("a")
    queue.add_after("a", SOON)
    assert await get(queue, SHORT) == "a"
    queue.done("a")
    assert await get(queue) == "a"


async def test_delayed_add_while_processing_marks_dirty(queue: WorkQueue[str]) -> None:
    await processing(queue, "a")
    queue.add_after("a", SOON)
    await assert_empty(queue, SOON * 4)  # fired while processing: held back
    queue.done("a")
    assert await get(queue, SHORT) == "a"


async def test_discard_cancels_a_pending_wake_up(queue: WorkQueue[str]) -> None:
    queue.add_after("a", SOON)
    queue.add_after("b", SOON)
    queue.discard("a")
    queue.discard("missing")  # no-op
    assert await get(queue) == "b"
    await assert_empty(queue, SOON * 4)


async def test_discard_does_not_remove_a_ready_key(queue: WorkQueue[str]) -> None:
    queue.add("a")
    queue.discard("a")
    assert await get(queue, SHORT) == "a"


async def test_close_cancels_every_wake_up(queue: WorkQueue[str]) -> None:
    queue.add_after("a", SOON)
    queue.add_after("b", SOON)
    queue.close()
    await assert_empty(queue, SOON * 4)


async def test_long_delays_are_capped(queue: WorkQueue[str], monkeypatch: pytest.MonkeyPatch) -> None:
    # Far wake-ups fire after MAX_DELAY at most, so the controller re-checks against the wall clock.
    monkeypatch.setattr(workqueue, "MAX_DELAY", SOON)
    queue.add_after("a", 24 * 3600)
    assert await get(queue) == "a"


def test_max_delay_is_an_hour() -> None:
    assert workqueue.MAX_DELAY == 3600.0


async def test_cancelled_get_does_not_lose_a_key(queue: WorkQueue[str]) -> None:
    await assert_empty(queue)  # a get() cancelled by its deadline
    queue.add("a")
    assert await get(queue) == "a"


async def test_tuple_keys() -> None:
    q: WorkQueue[tuple[str, str]] = WorkQueue()
    q.add(("agents", "codex-1"))
    q.add(("agents", "codex-1"))
    q.add(("agents", "claude-1"))
    assert len(q) == 2
    assert await asyncio.wait_for(q.get(), LONG) == ("agents", "codex-1")
    q.close()


async def test_oldest_wait_is_the_first_ready_keys(queue: WorkQueue[str]) -> None:
    assert queue.oldest_wait(now=time.monotonic()) == 0.0
    before = time.monotonic()
    queue.add("a")
    queue.add("b")
    after = time.monotonic()
    assert after + 10 - before >= queue.oldest_wait(now=after + 10) >= 10
    queue.add("a")  # already waiting: keeps its place and its age
    assert queue.oldest_wait(now=after + 10) >= 10
    assert await get(queue) == "a"
    assert queue.oldest_wait(now=after + 10) <= after + 10 - before  # now "b"'s
    assert await get(queue) == "b"
    assert queue.oldest_wait(now=after + 10) == 0.0


async def test_rate_limited_adds_back_off_per_key_until_forgotten() -> None:
    q: WorkQueue[str] = WorkQueue(retry_base=0.01, retry_max=0.04)
    try:
        assert [q.add_rate_limited("a") for _ in range(4)] == [0.01, 0.02, 0.04, 0.04]
        assert (q.num_requeues("a"), q.num_requeues("b")) == (4, 0)
        assert await get(q) == "a"  # the earliest wake-up stands (one per key)
        q.done("a")
        q.forget("a")
        assert q.num_requeues("a") == 0
        assert q.add_rate_limited("a") == 0.01
        q.discard("a")
        assert q.num_requeues("a") == 0
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(q.get(), 0.05)
    finally:
        q.close()


async def test_queued_at_is_when_the_work_first_joined_the_line(queue: WorkQueue[str]) -> None:
    before = time.monotonic()
    queue.add("a")
    queue.add("a")  # the same work: the first add's time stands
    assert await get(queue) == "a"
    first = queue.queued_at("a")
    assert first is not None
    assert before <= first <= time.monotonic()
    queue.done("a")
    assert queue.queued_at("a") is None


async def test_queued_at_of_a_dirty_key_is_when_it_changed_under_its_worker(queue: WorkQueue[str]) -> None:
    queue.add("a")
    assert await get(queue) == "a"
    changed = time.monotonic()
    queue.add("a")  # dirty: the time of this change is kept while the key waits for done()
    queue.add("a")
    queue.done("a")
    assert await get(queue) == "a"
    assert (queue.queued_at("a") or 0.0) >= changed
    queue.done("a")


async def test_urgent_keys_are_handed_out_before_the_line(queue: WorkQueue[str]) -> None:
    for key in ("a", "b", "c"):
        queue.add(key)
    queue.add("d", urgent=True)
    queue.add("e", urgent=True)
    assert len(queue) == 5
    assert [await get(queue) for _ in range(5)] == ["d", "e", "a", "b", "c"]


async def test_an_urgent_add_moves_a_queued_key_ahead_once(queue: WorkQueue[str]) -> None:
    queue.add("a")
    queue.add("b")
    queue.add("b", urgent=True)
    queue.add("b")  # a later ordinary add does not send it back
    assert len(queue) == 2
    assert [await get(queue), await get(queue)] == ["b", "a"]
    await assert_empty(queue)


async def test_an_urgent_change_while_processing_comes_back_urgent(queue: WorkQueue[str]) -> None:
    queue.add("a")
    assert await get(queue) == "a"
    queue.add("a", urgent=True)  # dirty, and urgent
    queue.add("b")
    queue.done("a")
    assert [await get(queue), await get(queue)] == ["a", "b"]


async def test_oldest_wait_counts_both_lines(queue: WorkQueue[str]) -> None:
    queue.add("a")
    queue.add("b", urgent=True)
    now = time.monotonic() + 5
    assert queue.oldest_wait(now=now) >= 5
    assert await get(queue) == "b"
    assert queue.oldest_wait(now=now) >= 5  # "a" still waits
    assert await get(queue) == "a"
    assert queue.oldest_wait(now=now) == 0
