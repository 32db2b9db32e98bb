"""The probe side of one reconcile, acted out: follow the probe in flight, record its outcome, start the next.

Every decision comes from logic/probing.py; this module only carries it out through the SlotContext
(writes, Jobs, Events, the cap, wake-ups), in the order the contract needs: intent before Job,
outcome before its Job is stopped.
"""

from __future__ import annotations

import datetime
import logging
import time
from collections.abc import Sequence

from slot_operator.kube.informer import Object
from slot_operator.kube.writer import JobRejected
from slot_operator.logic import jobs, probing, schedule
from slot_operator.logic import status as status_logic
from slot_operator.logic.identity import slot_owner_uid
from slot_operator.logic.outcome import NoVerdict, Verdict
from slot_operator.logic.spec import SlotSpec, verdict_fingerprint
from slot_operator.logic.status import ProbeRef
from slot_operator.runtime import timing
from slot_operator.runtime.context import SlotContext

logger = logging.getLogger(__name__)


class ProbeFlow:
    """The probe flow of one reconcile of one Slot whose spec parses."""

    def __init__(self, ctx: SlotContext, spec: SlotSpec) -> None:
        self.ctx = ctx
        self.spec = spec
        self.fingerprint = verdict_fingerprint(spec)
        self.cache = ctx.using.cache

    def _pods(self, job: probing.Job) -> list[Object]:
        return self.cache.job_pods(self.ctx.key[0], str(job["metadata"]["uid"]))

    async def carry(self) -> None:
        """A generation that changed only interval, timeout or suspend keeps the verdict (once the probe in flight,
        if any, is followed: stopped when it probes another spec, recorded when it ended, or left running)."""
        ctx = self.ctx
        carried = probing.carry(ctx.status, generation=ctx.generation, spec=self.spec, slot_uid=ctx.uid, now=ctx.now)
        if carried is not None:
            judged = status_logic.verdict_generation(ctx.status)
            logger.info("slot %s/%s: generation %d keeps the verdict of %s", *ctx.key, ctx.generation, judged)
            await ctx.write(carried)

    async def follow(self) -> bool:
        """Follow the probe in flight: adopt it, record its outcome, or stop it. True while it still runs."""
        ctx = self.ctx
        own = self.cache.slot_jobs(ctx.key[0], ctx.uid)
        for job in probing.lingering(ctx.status, own, self._pods, now=ctx.now):
            await ctx.delete(job)
        tracked = ctx.using.capacity.job_of(ctx.key) or None
        step = probing.follow(
            ctx.status,
            own,
            self._pods,
            generation=ctx.generation,
            fingerprint=self.fingerprint,
            timeout=self.spec.timeout,
            tracked=tracked,
            now=ctx.now,
        )
        if isinstance(step, probing.NoProbe):
            return False
        if isinstance(step, probing.Lost):
            ctx.release()
            if step.probe is not None:
                await self.record(step.probe, probing.lost(step.job_name))
            return False
        name = str(step.job["metadata"]["name"])
        if isinstance(step, probing.Supersede):
            logger.info("slot %s/%s: generation %d probes another spec, stopping %s", *ctx.key, ctx.generation, name)
            await ctx.delete(step.job)
            ctx.done_with()
            ctx.status.pop("currentProbe", None)  # the next write (the new generation's intent) drops it
            return False
        if isinstance(step, probing.Watch):
            ctx.hold(name)
            await self.carry()  # it runs on, and answers for this generation too
            if step.record_intent:  # a Job from an older run, or one status names for an earlier generation
                await ctx.write(probing.probing(ctx.status, step.probe, generation=ctx.generation, now=ctx.now))
            if step.reread:
                await self._reread(name)
            else:
                ctx.wake(step.wake)
            return True
        await self.record(step.probe, step.outcome, started=step.started, pods=self._pods(step.job))
        if step.outcome.stop_job:
            await ctx.delete(step.job)
        ctx.done_with()
        return False

    async def _reread(self, job_name: str) -> None:
        """Past the deadline and the cache still says running: read the Job afresh (the watch may be behind)."""
        ctx = self.ctx
        fresh = await ctx.using.writer.get_job(ctx.key[0], job_name)
        if fresh is not None:
            self.cache.wrote_job(fresh)
        ctx.wake_in(probing.DEADLINE_GRACE)

    async def record(
        self,
        probe: ProbeRef | None,
        outcome: Verdict | NoVerdict,
        *,
        trigger: schedule.Trigger | None = None,
        started: datetime.datetime | None = None,
        pods: Sequence[Object] | None = None,
    ) -> None:
        ctx = self.ctx
        config = ctx.using.config
        claim = self.cache.claim(ctx.key[0], self.spec.claim_name)
        audit = probing.audit_context(
            self.spec,
            outcome,
            pods or [],
            audit_image=config.audit_image,
            slot=ctx.key[1],
            slot_uid=ctx.uid,
            claim_uid=str(claim["metadata"]["uid"]) if claim is not None else None,
            policy=config.migration_policy,
        )
        given = probing.RecordInput(
            generation=ctx.generation,
            slot_uid=ctx.uid,
            spec=self.spec,
            audit=audit,
            retry_base=config.retry_base,
            retry_max=config.retry_max,
        )
        recorded = probing.record(ctx.status, probe, outcome, given, trigger=trigger, started=started, now=ctx.now)
        sent = time.monotonic()
        await ctx.write(recorded.status)
        queued = ctx.using.queued_at(ctx.key) or ctx.picked
        timing.verdict(ctx.key, queued=queued, picked=ctx.picked, sent=sent, answered=time.monotonic())
        ctx.using.metrics.probe_finished(
            *ctx.key, result=recorded.result, verdict=recorded.verdict, seconds=recorded.seconds
        )
        logger.info("slot %s/%s: %s (%s)", *ctx.key, recorded.result, outcome.message)
        await ctx.event(recorded.event)

    async def schedule(self, *, first_look: bool, spread_window: datetime.timedelta) -> None:
        """No probe runs: write what is next, or take a place and start one."""
        ctx = self.ctx
        claim = self.cache.claim(ctx.key[0], self.spec.claim_name)
        given = probing.Schedule(
            slot=ctx.key[1],
            slot_uid=ctx.uid,
            generation=ctx.generation,
            spec=self.spec,
            request=schedule.manual_request(ctx.annotations),
            claim_exists=claim is not None,
            first_look=first_look,
            spread_window=spread_window,
            holds_place=ctx.using.capacity.holds(ctx.key),
        )
        step = probing.next_probe(ctx.status, given, now=ctx.now)
        if isinstance(step, probing.Idle):
            ctx.release()
            await ctx.write(step.status)
            if step.wake is not None:
                ctx.wake(step.wake)
            return
        if isinstance(step, probing.Spread):
            ctx.wake_in(step.delay)
            return
        position = ctx.using.capacity.acquire(ctx.key, now=time.monotonic())
        ctx.publish_queue()
        if position is not None:
            await ctx.write(
                probing.queued(ctx.status, step.probe, generation=ctx.generation, ahead=position, now=ctx.now)
            )
            return
        try:
            await self._start(step.probe)
        except BaseException:
            ctx.release()
            raise

    async def _start(self, probe: ProbeRef) -> None:
        ctx = self.ctx
        namespace = ctx.key[0]
        trigger = schedule.Trigger(kind=probe.trigger, request=probe.request)
        claim = self.cache.claim(namespace, self.spec.claim_name)
        placement = schedule.place(claim, self.spec.claim_name, self.cache.claim_users(namespace, self.spec.claim_name))
        if isinstance(placement, NoVerdict):
            ctx.release()
            await self.record(None, placement, trigger=trigger)
            return
        # Intent first: if the operator dies after this write, the next run adopts or recreates this Job.
        await ctx.write(probing.probing(ctx.status, probe, generation=ctx.generation, now=ctx.now))
        config = ctx.using.config
        manifest = jobs.build_probe_job(
            name=probe.job_name,
            namespace=namespace,
            slot_name=ctx.key[1],
            slot_uid=ctx.uid,
            generation=probe.generation,  # a probe queued for an earlier generation of the same verdict fields
            trigger=probe.trigger,
            spec=self.spec,
            node=placement.node,
            ttl=config.job_ttl,
            audit_image=config.audit_image or None,
        )
        try:
            created, job = await ctx.using.writer.create_job(manifest)
        except JobRejected as exc:
            # The API server refused the Job (a field it calls invalid, quota, admission): say so in conditions.
            ctx.release()
            await self.record(None, exc.outcome, trigger=trigger)
            return
        if job is not None and slot_owner_uid(job) != ctx.uid:
            ctx.release()
            await self.record(None, probing.foreign_job(probe), trigger=trigger)
            return
        if job is not None:
            self.cache.wrote_job(job)
        ctx.hold(probe.job_name)
        where = f", on node {placement.node}" if placement.node else ""
        logger.info(
            "slot %s/%s: probe %s %s (%s%s)",
            *ctx.key,
            probe.job_name,
            "started" if created else "already running",
            probe.trigger,
            where,
        )
        ctx.wake_in(self.spec.timeout + probing.DEADLINE_GRACE)
