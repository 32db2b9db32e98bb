"""`reconcile(key) -> Result`: one Slot, from the caches, to what it needs now (docs/design.md §2.2-2.4, §3).

Level-triggered: each reconcile derives everything from the cached Slot, its own Jobs (by identity)
and their pods, so missed events, restarts and duplicate deliveries converge. It makes no API read
of its own (the caches are fed by the watches, and every object the operator writes is cached from
the API's answer); its writes are conditional (the Slot's resourceVersion; deterministic Job names),
so a decision taken from a stale cache fails with 409 instead of doing harm. It returns when to look
at the Slot again; failures propagate to the work queue, which owns retries.
"""

from __future__ import annotations

import collections
import dataclasses
import datetime
import logging
from collections.abc import Iterable, Mapping
from typing import Any

from slot_operator.kube.informer import Key
from slot_operator.logic import probing, schedule
from slot_operator.logic import status as status_logic
from slot_operator.logic.outcome import is_finished
from slot_operator.logic.spec import InvalidSpec, parse_spec
from slot_operator.logic.verdict import FailureReason
from slot_operator.runtime.context import Collaborators, SlotContext
from slot_operator.runtime.migrations import MigrationFlow
from slot_operator.runtime.probes import ProbeFlow

logger = logging.getLogger(__name__)

IMPOSTORS_REMEMBERED = 4096  # impostor Jobs reported once each (least recently seen forgotten)


@dataclasses.dataclass(frozen=True, kw_only=True)
class Result:
    """When to reconcile the Slot again (seconds from now); None: only a change of what it watches brings it back."""

    requeue_after: float | None = None


class SlotReconciler:
    def __init__(self, using: Collaborators) -> None:
        self.using = using
        self.first_look: set[Key] = set()  # not reconciled since start-up: overdue periodic probes are spread
        self.spread_window = datetime.timedelta(0)
        self._impostors_seen: collections.OrderedDict[str, None] = collections.OrderedDict()
        self._impostor_reports: dict[Key, list[str]] = {}

    def starting(self, keys: Iterable[Key], statuses: Iterable[Mapping[str, Any]]) -> None:
        """The Slots found at start-up: their overdue periodic probes are spread over a window that grows with them."""
        self.first_look = set(keys)
        self.spread_window = schedule.spread_window(list(statuses), now=self.using.clock())

    def impostor(self, slot: Key, job: Mapping[str, Any]) -> bool:
        """A Job imitates `slot`'s probe (labels or owner name it, identity does not). True when first seen."""
        meta = job.get("metadata") or {}
        uid = str(meta.get("uid"))
        if uid in self._impostors_seen:
            return False
        self._impostors_seen[uid] = None
        while len(self._impostors_seen) > IMPOSTORS_REMEMBERED:
            self._impostors_seen.popitem(last=False)
        self.using.metrics.impostors.labels("Job").inc()
        message = (
            f"Job {meta.get('namespace')}/{meta.get('name')} carries this Slot's probe labels but is not one of its "
            "Jobs (a Slot's Jobs are in its namespace, controlled by its uid): ignored"
        )
        logger.warning("slot %s/%s: %s", *slot, message)
        self._impostor_reports.setdefault(slot, []).append(message)
        return True

    def forget(self, key: Key) -> None:
        """The Slot is gone: its place in the cap, its start-up spread and its reports go too."""
        for granted in self.using.capacity.release(key):
            self.using.wake(granted)
        self.first_look.discard(key)
        self._impostor_reports.pop(key, None)

    async def reconcile(self, key: Key) -> Result:
        slot = self.using.cache.slot(key)
        if slot is None or (slot.get("metadata") or {}).get("deletionTimestamp"):
            self.forget(key)
            return Result()
        ctx = SlotContext(slot, self.using)
        for message in self._impostor_reports.pop(key, ()):
            await ctx.event(probing.Event(kind="Warning", reason="ImpostorIgnored", message=message))
        config = self.using.config
        try:
            spec = parse_spec(
                slot.get("spec") or {}, default_interval=config.default_interval, default_timeout=config.default_timeout
            )
        except InvalidSpec as exc:
            await self._invalid(ctx, str(exc))
            return _result(ctx)
        probes = ProbeFlow(ctx, spec)
        if await probes.follow():
            return _result(ctx)  # a probe runs: its Job's and pod's events (or the deadline wake-up) bring us back
        await probes.carry()
        migrations = MigrationFlow(ctx, spec)
        if await migrations.follow() or await migrations.answer():
            ctx.release()  # an ownership migration runs: no probe meanwhile, nor a place in line
            return _result(ctx)
        first_look = key in self.first_look
        self.first_look.discard(key)
        await probes.schedule(first_look=first_look, spread_window=self.spread_window)
        return _result(ctx)

    async def _invalid(self, ctx: SlotContext, message: str) -> None:
        # A probe of a spec that is no longer valid answers nothing useful: stop it and free its place.
        job = schedule.current_job(ctx.status, self.using.cache.slot_jobs(ctx.key[0], ctx.uid))
        if job is not None and not is_finished(job):
            await ctx.delete(job)
        ctx.release()
        announce = not probing.was_invalid(ctx.status)
        await ctx.write(status_logic.invalid_spec(ctx.status, generation=ctx.generation, message=message, now=ctx.now))
        if announce:
            await ctx.event(probing.Event(kind="Warning", reason=FailureReason.INVALID_SPEC.value, message=message))


def _result(ctx: SlotContext) -> Result:
    if ctx.wake_at is None:
        return Result()
    return Result(requeue_after=max((ctx.wake_at - ctx.now).total_seconds(), 0.0))
