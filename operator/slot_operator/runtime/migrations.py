"""The ownership migration of one reconcile, acted out (docs/design.md §2.4): two keys, one Job, then a probe.

The decisions are logic/ownership.py's (may it run?) and logic/migrating.py's (what does the one in
flight call for?); this module carries them out through the SlotContext.
"""

from __future__ import annotations

import dataclasses
import logging

from slot_operator.kube.writer import JobRejected
from slot_operator.logic import jobs, migrating, ownership
from slot_operator.logic import status as status_logic
from slot_operator.logic.identity import slot_owner_uid
from slot_operator.logic.spec import SlotSpec
from slot_operator.runtime.context import SlotContext

logger = logging.getLogger(__name__)


class MigrationFlow:
    """The migration flow of one reconcile of one Slot whose spec parses and whose probe is not running."""

    def __init__(self, ctx: SlotContext, spec: SlotSpec) -> None:
        self.ctx = ctx
        self.spec = spec
        self.cache = ctx.using.cache

    def _plan(self, token: str | None) -> ownership.MigrationPlan | ownership.Refusal:
        """Everything checked afresh: the keys, the audit on record and its approval, the claim and who uses it."""
        ctx = self.ctx
        namespace = ctx.key[0]
        own = [*self.cache.slot_jobs(namespace, ctx.uid), *self.cache.slot_migration_jobs(namespace, ctx.uid)]
        users = migrating.claim_users(
            self.cache.claim_users(namespace, self.spec.claim_name), own_jobs={str(j["metadata"]["uid"]) for j in own}
        )
        claim = self.cache.claim(namespace, self.spec.claim_name)
        return ownership.plan_migration(
            ctx.status,
            expected=(self.spec.run_as_user, self.spec.run_as_group),
            policy=ctx.using.config.migration_policy,
            token=token,
            claim_uid=str(claim["metadata"]["uid"]) if claim is not None else None,
            users=users,
        )

    async def answer(self) -> bool:
        """A new migration request: refuse it, saying why, or start its Job. True once a Job runs."""
        ctx = self.ctx
        request = ownership.migration_request(ctx.annotations)
        if request is None or ownership.answered(ctx.status, request):
            return False
        plan = self._plan(request.token)
        if isinstance(plan, ownership.Refusal):
            await self._refuse(request, plan)
            return False
        token = f"migrate/{request.token}/{request.dry_run}"
        migration = ownership.MigrationRef(
            job_name=jobs.job_name(ctx.key[1], ctx.uid, token, kind="migrate"),
            request=request.token,
            dry_run=request.dry_run,
            old=plan.old,
            new=plan.new,
            start_time=ctx.now,
        )
        await ctx.write(
            status_logic.migration_started(ctx.status, generation=ctx.generation, migration=migration, now=ctx.now)
        )
        return await self._create(migration)

    async def _create(self, migration: ownership.MigrationRef) -> bool:
        ctx = self.ctx
        config = ctx.using.config
        manifest = jobs.build_migration_job(
            name=migration.job_name,
            namespace=ctx.key[0],
            slot_name=ctx.key[1],
            slot_uid=ctx.uid,
            request=migration.request,
            spec=self.spec,
            image=config.audit_image,
            old=migration.old,
            dry_run=migration.dry_run,
            ttl=config.job_ttl,
        )
        request = ownership.MigrationRequest(token=migration.request, dry_run=migration.dry_run)
        try:
            created, job = await ctx.using.writer.create_job(manifest)
        except JobRejected as exc:
            await self._refuse(request, migrating.rejected_job_refusal(exc.error.status, exc.error.message), migration)
            return False
        if job is None or slot_owner_uid(job) != ctx.uid:
            # A Job of that name that is not this Slot's (made by someone else): never adopted, never deleted.
            await self._refuse(request, migrating.foreign_job_refusal(migration.job_name), migration)
            return False
        self.cache.wrote_job(job)
        # Its uid in status: from now on, a missing Job was deleted (cancelled), not never created.
        migration = dataclasses.replace(migration, job_uid=str(job["metadata"]["uid"]))
        await ctx.write(
            status_logic.migration_job_created(ctx.status, generation=ctx.generation, migration=migration, now=ctx.now)
        )
        logger.info(
            "slot %s/%s: ownership migration %s %s (%s -> %s%s)",
            *ctx.key,
            migration.job_name,
            "started" if created else "already running",
            ownership.owner(*migration.old),
            ownership.owner(*migration.new),
            ", dry run" if migration.dry_run else "",
        )
        ctx.wake_in(migrating.POD_GRACE)
        return True

    async def follow(self) -> bool:
        """Follow the migration in flight: cancel it, create its Job, or record its end. True while it runs."""
        ctx = self.ctx
        migration = ownership.MigrationRef.from_status(ctx.status.get("currentOwnershipMigration"))
        if migration is None:
            return False
        namespace = ctx.key[0]
        job = next(
            (
                j
                for j in self.cache.slot_migration_jobs(namespace, ctx.uid)
                if j["metadata"]["name"] == migration.job_name
            ),
            None,
        )
        pods = self.cache.job_pods(namespace, str(job["metadata"]["uid"])) if job is not None else []
        request = ownership.migration_request(ctx.annotations)
        step = migrating.follow(migration, job, pods, request=request, now=ctx.now)
        if isinstance(step, migrating.Cancel):
            await self._cancel(migration, step)
            return False
        assert request is not None  # follow() cancels a migration whose request is gone
        if isinstance(step, migrating.Recheck):
            plan = self._plan(None)  # approved when accepted: everything else again
            if isinstance(plan, ownership.MigrationPlan) and (plan.old, plan.new) == (migration.old, migration.new):
                return await self._create(migration)
            refusal = plan if isinstance(plan, ownership.Refusal) else migrating.changed_audit_refusal()
            await self._refuse(request, refusal, migration)
            return False
        if isinstance(step, migrating.Wait):
            ctx.wake(step.wake)
            return True
        if isinstance(step, migrating.AskWhy):
            failure = await ctx.using.writer.pod_creation_failure(namespace, migration.job_name)
            if failure is None:
                ctx.wake_in(migrating.RECHECK)
                return True
            await ctx.delete(step.job)
            await self._refuse(request, migrating.pod_failure_refusal(failure), migration)
            return False
        await self._finish(migration, step)
        return False

    async def _finish(self, migration: ownership.MigrationRef, step: migrating.Finish) -> None:
        ctx = self.ctx
        await ctx.write(
            status_logic.migration_finished(
                ctx.status, generation=ctx.generation, migration=migration, done=step.done, now=ctx.now
            )
        )
        if step.done.stop_job:
            await ctx.delete(step.job)
        last = ctx.status.get("lastOwnershipMigration") or {}
        reason, message = str(last.get("reason")), str(last.get("message"))
        ctx.using.metrics.migrations.labels(reason).inc()
        logger.info("slot %s/%s: ownership migration %s: %s", *ctx.key, reason, message)
        await ctx.event(migrating.finished_event(reason, message))

    async def _cancel(self, migration: ownership.MigrationRef, step: migrating.Cancel) -> None:
        ctx = self.ctx
        if step.job is not None:
            await ctx.delete(step.job)
        message = migrating.cancelled_message(step.why, dry_run=migration.dry_run)
        await ctx.write(
            status_logic.migration_cancelled(
                ctx.status, generation=ctx.generation, migration=migration, message=message, now=ctx.now
            )
        )
        ctx.using.metrics.migrations.labels("MigrationCancelled").inc()
        logger.info("slot %s/%s: ownership migration cancelled: %s", *ctx.key, message)
        await ctx.event(migrating.cancelled_event(message))

    async def _refuse(
        self,
        request: ownership.MigrationRequest,
        refusal: ownership.Refusal,
        migration: ownership.MigrationRef | None = None,
    ) -> None:
        ctx = self.ctx
        await ctx.write(
            status_logic.migration_refused(
                ctx.status,
                generation=ctx.generation,
                request=request,
                refusal=refusal,
                migration=migration,
                now=ctx.now,
            )
        )
        ctx.using.metrics.migrations.labels(refusal.reason).inc()
        logger.info("slot %s/%s: ownership migration refused (%s): %s", *ctx.key, refusal.reason, refusal.message)
        await ctx.event(migrating.refused_event(refusal))
