"""What the API (and the loop's scheduler) asks of the loop: policy, runs, approvals, dead
letters. The database is the truth; workflows are told of a change after it is committed.

Sync methods do database work (routes run them in the thread pool); the async ones also
talk to the Durable client and run their database work with ``anyio.to_thread``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, TypeVar

from anyio import CancelScope, to_thread
from pydantic import ValidationError

from hartonomous.autonomy import names
from hartonomous.autonomy.policy import Budget, Policy
from hartonomous.autonomy.records import (
    ActionRecord,
    ApprovalRecord,
    DeadLetterRecord,
    PhaseRecord,
    RunRecord,
)
from hartonomous.autonomy.registry import REGISTRY
from hartonomous.autonomy.store import RUN_ENDED
from hartonomous.autonomy.types import (
    ActionStatus,
    ApprovalStatus,
    DeadLetterStatus,
    RunStatus,
)
from hartonomous.domain.workflows import FINISHED, WorkflowRun
from hartonomous.errors import (
    Conflict,
    Forbidden,
    NotFound,
    ServiceUnavailable,
    UnprocessableContent,
)
from hartonomous.ports import UnitOfWork, UnitOfWorkFactory, WorkflowClient
from hartonomous.services.clock import new_id, utcnow
from hartonomous.services.pages import Page, page_of, position_after
from hartonomous.services.starts import runtime_status, started_anyway
from hartonomous.services.tenants import Principal
from hartonomous.store.repositories import WriteConflict

log = logging.getLogger(__name__)
T = TypeVar("T")
# A run whose workflow has no state yet may be between its row and its start: left alone
# this long before it counts as stale.
START_GRACE = timedelta(minutes=2)
# Past its limits by this much (see ``overdue``), a run is presumed dead where its workflow
# cannot be asked (a scheduled tick): a phase that started in time may run over (a model's
# plan, an action's retries, a re-run workflow), but not by an hour.
OVERDUE_MARGIN = timedelta(hours=1)


@dataclass(frozen=True)
class RunDetail:
    run: RunRecord
    phases: list[PhaseRecord]
    actions: list[ActionRecord]


@dataclass(frozen=True)
class ApprovalDetail:
    approval: ApprovalRecord
    action: ActionRecord | None


@dataclass
class AutonomyService:
    uow_factory: UnitOfWorkFactory
    retry_first_ms: int = 1000  # Settings.autonomy_retry_first_ms

    # -- registry and policy ---------------------------------------------------------------

    @staticmethod
    def actions_registry() -> list[dict[str, Any]]:
        return [spec.describe() for spec in REGISTRY.values()]

    def policy(self, tenant_id: str) -> Policy:
        """The stored policy, or the default (schedule off, every action needs approval)."""
        with self.uow_factory(write=False, tenant_id=tenant_id) as uow:
            return self._policy(uow, tenant_id)

    @staticmethod
    def _policy(uow: UnitOfWork, tenant_id: str) -> Policy:
        body = uow.autonomy.policy(tenant_id)
        return Policy.model_validate(body) if body is not None else Policy()

    async def put_policy(
        self, client: WorkflowClient | None, tenant_id: str, policy: Policy, by: str
    ) -> Policy:
        """Store it, then make the tenant's scheduler match it now: started when the
        schedule is on, terminated when off (it would also end itself on its next wake).
        ``client`` may be None only to turn the schedule off where no workflows run."""
        if policy.schedule.enabled and client is None:
            raise ServiceUnavailable("a schedule needs workflows, which this process lacks")
        await to_thread.run_sync(self._store_policy, tenant_id, policy, by)
        if client is not None:
            if policy.schedule.enabled:
                await self._ensure_scheduler(client, tenant_id)
            else:
                await self._stop_scheduler(client, tenant_id)
        return policy

    def _store_policy(self, tenant_id: str, policy: Policy, by: str) -> None:
        with self.uow_factory(write=True, tenant_id=tenant_id) as uow:
            uow.autonomy.put_policy(tenant_id, policy.model_dump(mode="json"), by, utcnow())
            uow.commit()

    async def _ensure_scheduler(self, client: WorkflowClient, tenant_id: str) -> None:
        instance_id = names.schedule_instance_id(tenant_id)
        if _live(await client.get_status(instance_id)):
            return
        run = WorkflowRun(instance_id, tenant_id, names.SCHEDULE, utcnow())
        await to_thread.run_sync(self._own, run)
        try:
            await client.start_new(names.SCHEDULE, instance_id, {"tenant_id": tenant_id})
        except Exception:
            # A concurrent PUT may have started it between the look and the start.
            if not _live(await client.get_status(instance_id)):
                raise

    async def _stop_scheduler(self, client: WorkflowClient, tenant_id: str) -> None:
        instance_id = names.schedule_instance_id(tenant_id)
        if _live(await client.get_status(instance_id)):
            await client.terminate(instance_id, "the tenant's policy turned the schedule off")

    def _own(self, run: WorkflowRun) -> None:
        """Record the tenant as the owner (so /v1/workflows/{id} shows it); a scheduler
        started before under the same instance id is owned already."""
        with self.uow_factory(write=True, tenant_id=run.tenant_id) as uow:
            if uow.workflow_runs.get(run.tenant_id, run.instance_id) is None:
                uow.workflow_runs.add(run)
                uow.commit()

    # -- runs ------------------------------------------------------------------------------

    def create_run(
        self,
        tenant_id: str,
        *,
        origin: str,
        budget_credits: float | None = None,
        max_duration_s: int | None = None,
        max_iterations: int | None = None,
        retry_first_ms: int | None = None,
        end_overdue: bool = False,
        run_id: str | None = None,
    ) -> tuple[RunRecord, names.RunInput]:
        """The run's row (active) and its workflow's input; 409 while another is active.
        Unset limits come from the tenant's policy; a set one may be anything the policy's
        budget bounds allow. Its workflow is not started here (the caller starts it).

        ``end_overdue`` (the schedule's ticks, which cannot ask the Durable client whether
        the active run's workflow lives): an active run past every limit it could still be
        within (``overdue``) is ended ``failed`` first, in the same transaction, so a run
        whose workflow died cannot make every tick skip.

        ``run_id`` (a schedule's tick derives it): a run with that id exists already, the
        caller is a re-run of the one that created it, and gets that run back (not a 409)."""
        now = utcnow()
        with self.uow_factory(write=True, tenant_id=tenant_id) as uow:
            existing = uow.autonomy.run(tenant_id, run_id) if run_id else None
            if existing is not None:
                return existing, names.RunInput(
                    tenant_id=tenant_id, run_id=existing.id,
                    started_at=existing.started_at.isoformat(),
                    budget_credits=existing.budget_credits,
                    max_duration_s=existing.max_duration_s,
                    max_iterations=existing.max_iterations,
                    retry_first_ms=retry_first_ms if retry_first_ms is not None
                    else self.retry_first_ms,
                )  # fmt: skip
            policy = self._policy(uow, tenant_id)
            budget = _budget(policy.budget, budget_credits, max_duration_s, max_iterations)
            run_id = run_id or new_id()
            run = RunRecord(
                id=run_id,
                tenant_id=tenant_id,
                instance_id=names.run_instance_id(run_id),
                origin=origin,
                status=RunStatus.RUNNING.value,
                budget_credits=budget.credits,
                max_duration_s=budget.duration_s,
                max_iterations=budget.max_iterations,
                iterations=0,
                spent_credits=0.0,
                summary=None,
                error=None,
                started_at=now,
                ended_at=None,
            )
            if not self._add_run(uow, run, policy, now, end_overdue):
                active = uow.autonomy.active_run(tenant_id)
                active_id = active.id if active else "unknown"
                raise Conflict(
                    f"run {active_id} is active for this tenant; one run at a time",
                    active_run_id=active_id,
                )
            uow.workflow_runs.add(WorkflowRun(run.instance_id, tenant_id, names.RUN, now))
            uow.commit()
        run_input = names.RunInput(
            tenant_id=tenant_id,
            run_id=run_id,
            started_at=now.isoformat(),
            budget_credits=run.budget_credits,
            max_duration_s=run.max_duration_s,
            max_iterations=run.max_iterations,
            retry_first_ms=retry_first_ms if retry_first_ms is not None else self.retry_first_ms,
        )
        return run, run_input

    @staticmethod
    def _add_run(
        uow: UnitOfWork, run: RunRecord, policy: Policy, now: datetime, end_overdue: bool
    ) -> bool:
        """Insert the active run; False while another is active (and, asked to, not
        overdue: an overdue one is ended first)."""
        try:
            uow.autonomy.add_run(run)
            return True
        except WriteConflict:
            active = uow.autonomy.active_run(run.tenant_id)
            late = overdue(uow, active, policy, now) if active and end_overdue else None
            if active is None or late is None:
                return False
        uow.autonomy.end_run(run.tenant_id, active.id, RunStatus.FAILED, now, error=late)
        log.warning("ended overdue autonomy run %s of %s: %s", active.id, run.tenant_id, late)
        try:
            uow.autonomy.add_run(run)
        except WriteConflict:  # another start took the slot meanwhile
            return False
        return True

    async def start_run(
        self,
        client: WorkflowClient,
        tenant_id: str,
        *,
        budget_credits: float | None = None,
        max_duration_s: int | None = None,
        max_iterations: int | None = None,
    ) -> RunRecord:
        """Create a run and start its workflow; an active run whose workflow ended without
        ending it (a crash, an operator's terminate) is ended first, so it cannot block the
        tenant forever."""
        await self._end_stale_run(client, tenant_id)
        run, run_input = await to_thread.run_sync(
            lambda: self.create_run(
                tenant_id,
                origin="api",
                budget_credits=budget_credits,
                max_duration_s=max_duration_s,
                max_iterations=max_iterations,
            )
        )
        try:
            await client.start_new(names.RUN, run.instance_id, run_input.to_json())
        except BaseException as exc:
            with CancelScope(shield=True):
                started = await started_anyway(client, run.instance_id, exc)
                if started and isinstance(exc, Exception):  # a cancellation goes on up
                    return run
                if started is False:
                    error = f"its workflow did not start: {exc}"[:2000]
                    await to_thread.run_sync(self._end, tenant_id, run.id, RunStatus.FAILED, error)
            raise
        return run

    async def _end_stale_run(self, client: WorkflowClient, tenant_id: str) -> None:
        active = await to_thread.run_sync(self._active_run, tenant_id)
        if active is None:
            return
        runtime = runtime_status(await client.get_status(active.instance_id))
        if runtime is None and utcnow() - active.started_at < START_GRACE:
            return  # maybe being started right now
        if runtime is not None and runtime not in FINISHED:
            return
        if runtime in ("Terminated", "Canceled"):
            status, error = RunStatus.TERMINATED, f"its workflow was {runtime.lower()}"
        else:
            status, error = RunStatus.FAILED, f"its workflow ended ({runtime or 'no state'})"
        # It may have ended itself between the two looks: then this changes nothing.
        if await to_thread.run_sync(self._end, tenant_id, active.id, status, error):
            log.warning("ended stale autonomy run %s of %s: %s", active.id, tenant_id, error)

    def _active_run(self, tenant_id: str) -> RunRecord | None:
        with self.uow_factory(write=False, tenant_id=tenant_id) as uow:
            return uow.autonomy.active_run(tenant_id)

    def _end(self, tenant_id: str, run_id: str, status: RunStatus, error: str) -> bool:
        with self.uow_factory(write=True, tenant_id=tenant_id) as uow:
            ended = uow.autonomy.end_run(tenant_id, run_id, status.value, utcnow(), error=error)
            uow.commit()
        return ended

    def runs(self, tenant_id: str, limit: int, cursor: str | None = None) -> Page[RunRecord]:
        """Newest first."""
        after = position_after(cursor)
        with self.uow_factory(write=False, tenant_id=tenant_id) as uow:
            items = uow.autonomy.runs(tenant_id, limit + 1, after)
        return page_of(items, limit, lambda r: (r.started_at, r.id))

    def run(self, tenant_id: str, run_id: str) -> RunDetail:
        """The run with its audit (a row per phase) and its actions; another tenant's: 404."""
        with self.uow_factory(write=False, tenant_id=tenant_id) as uow:
            run = uow.autonomy.run(tenant_id, run_id)
            if run is None:
                raise NotFound(f"no autonomy run {run_id!r}")
            phases = uow.autonomy.phases(tenant_id, run_id)
            actions = uow.autonomy.actions(tenant_id, run_id=run_id)
        return RunDetail(run, phases, actions)

    # -- approvals -------------------------------------------------------------------------

    def approvals(
        self, tenant_id: str, status: str | None, limit: int, cursor: str | None = None
    ) -> Page[ApprovalDetail]:
        """Newest request first, each with the action it is about."""
        after = position_after(cursor)
        with self.uow_factory(write=False, tenant_id=tenant_id) as uow:
            items = uow.autonomy.approvals(tenant_id, status, limit + 1, after)
            page = page_of(items, limit, lambda a: (a.requested_at, a.id))
            details = [
                ApprovalDetail(a, uow.autonomy.action(tenant_id, a.action_id)) for a in page.items
            ]
        return Page(details, page.next_cursor)

    def approval(self, tenant_id: str, approval_id: str) -> ApprovalDetail:
        with self.uow_factory(write=False, tenant_id=tenant_id) as uow:
            return self._approval(uow, tenant_id, approval_id)

    @staticmethod
    def _approval(uow: UnitOfWork, tenant_id: str, approval_id: str) -> ApprovalDetail:
        approval = uow.autonomy.approval(tenant_id, approval_id)
        if approval is None:
            raise NotFound(f"no approval {approval_id!r}")
        return ApprovalDetail(approval, uow.autonomy.action(tenant_id, approval.action_id))

    async def decide(
        self,
        client: WorkflowClient,
        tenant_id: str,
        approval_id: str,
        approve: bool,
        principal: Principal,
        note: str | None = None,
    ) -> ApprovalDetail:
        """Record an admin's decision (the approver is the calling key), then tell the
        waiting run. 409 unless pending, unexpired and its run still running (only a running
        run executes an approved action); a late decision expires it."""
        decided = await to_thread.run_sync(
            self._decide, tenant_id, approval_id, approve, principal, note
        )
        event = {"status": decided.approval.status}
        try:
            await client.raise_event(
                decided.approval.instance_id, names.approval_event(approval_id), event
            )
        except Exception:  # it ended (or expired it) meanwhile: the database holds the truth
            log.warning(
                "approval %s decided, but run %s took no event",
                approval_id,
                decided.approval.instance_id,
                exc_info=True,
            )
        return decided

    def _decide(
        self, tenant_id: str, approval_id: str, approve: bool, principal: Principal,
        note: str | None,
    ) -> ApprovalDetail:  # fmt: skip
        now, by = utcnow(), f"key:{principal.key_id}"
        status = ApprovalStatus.APPROVED if approve else ApprovalStatus.REJECTED
        with self.uow_factory(write=True, tenant_id=tenant_id) as uow:
            repo = uow.autonomy
            detail = self._approval(uow, tenant_id, approval_id)
            approval = detail.approval
            if approval.status != ApprovalStatus.PENDING:
                raise Conflict(
                    f"approval {approval_id} is {approval.status}; only a pending one is decided",
                    approval_status=approval.status,
                )
            run = repo.run(tenant_id, approval.run_id)
            ended = run.status if run is not None else "gone"
            if ended != RunStatus.RUNNING or approval.expires_at <= now:
                # Nothing would execute it: expire it (unless decided meanwhile), then refuse.
                by_rule = "timer" if ended == RunStatus.RUNNING else RUN_ENDED
                _expire(uow, approval, by_rule, now)
                if ended != RunStatus.RUNNING:
                    raise Conflict(
                        f"run {approval.run_id} has ended ({ended}); nothing would execute a "
                        f"decision on approval {approval_id}",
                        approval_status=ApprovalStatus.EXPIRED.value,
                        run_status=ended,
                    )
                raise Conflict(
                    f"approval {approval_id} expired at {approval.expires_at.isoformat()}; "
                    "it can no longer be decided",
                    approval_status=ApprovalStatus.EXPIRED.value,
                )
            if approve:
                _require_scope(principal, detail.action)
            if not repo.decide(tenant_id, approval_id, status, by, now, note):
                raise Conflict(f"approval {approval_id} was decided meanwhile")
            if not repo.transition(
                tenant_id, approval.action_id, [ActionStatus.AWAITING_APPROVAL],
                ActionStatus(status.value), now, decided_by=by,
            ):  # fmt: skip
                action = repo.action(tenant_id, approval.action_id)
                state = action.status if action else "gone"
                raise Conflict(  # rolled back: the approval stays as it was
                    f"action {approval.action_id} is {state}, not awaiting approval; "
                    f"approval {approval_id} was not decided",
                    action_status=state,
                )
            decided = self._approval(uow, tenant_id, approval_id)
            uow.commit()
            return decided

    # -- dead letters ----------------------------------------------------------------------

    def dead_letters(
        self, tenant_id: str, status: str | None, limit: int, cursor: str | None = None
    ) -> Page[DeadLetterRecord]:
        after = position_after(cursor)
        with self.uow_factory(write=False, tenant_id=tenant_id) as uow:
            items = uow.autonomy.dead_letters(tenant_id, status, limit + 1, after)
        return page_of(items, limit, lambda d: (d.created_at, d.id))

    def dead_letter(self, tenant_id: str, letter_id: str) -> DeadLetterRecord:
        with self.uow_factory(write=False, tenant_id=tenant_id) as uow:
            return self._letter(uow, tenant_id, letter_id)

    @staticmethod
    def _letter(uow: UnitOfWork, tenant_id: str, letter_id: str) -> DeadLetterRecord:
        letter = uow.autonomy.dead_letter(tenant_id, letter_id)
        if letter is None:
            raise NotFound(f"no dead letter {letter_id!r}")
        return letter

    async def park_stale_retries(
        self, client: WorkflowClient | None, tenant_id: str, letter_id: str | None = None
    ) -> None:
        """A letter ``retrying`` whose retry instance is not live (it ended without settling
        the letter: terminated, failed; or it never started: a crash between the claim and
        the start, no state after ``START_GRACE``) is parked again, so it cannot stay
        retrying forever. Run before the letters are read or changed; without workflows
        nothing can be told, and nothing changes."""
        if client is None:
            return
        with self.uow_factory(write=False, tenant_id=tenant_id) as uow:
            if letter_id is None:
                retrying = uow.autonomy.dead_letters(tenant_id, DeadLetterStatus.RETRYING, 100)
            else:
                one = uow.autonomy.dead_letter(tenant_id, letter_id)
                retrying = [one] if one and one.status == DeadLetterStatus.RETRYING else []
        for letter in retrying:
            instance_id = names.retry_instance_id(letter.id, letter.attempts, letter.updated_at)
            try:
                runtime = runtime_status(await client.get_status(instance_id))
            except Exception:  # unknown: leave it for the next look
                log.warning("could not look at retry %s", instance_id, exc_info=True)
                continue
            if runtime is None and utcnow() - letter.updated_at < START_GRACE:
                continue  # maybe being started right now
            if runtime is not None and runtime not in FINISHED:
                continue
            if await to_thread.run_sync(self._repark, letter):
                log.warning(
                    "dead letter %s of %s parked again: its retry %s ended (%s) without "
                    "settling it",
                    letter.id, tenant_id, instance_id, runtime or "no state",
                )  # fmt: skip

    def _repark(self, letter: DeadLetterRecord) -> bool:
        with self.uow_factory(write=True, tenant_id=letter.tenant_id) as uow:
            done = uow.autonomy.transition_dead_letter(
                letter.tenant_id, letter.id, [DeadLetterStatus.RETRYING],
                DeadLetterStatus.PARKED, utcnow(), updated_at=letter.updated_at,
            )  # fmt: skip
            uow.commit()
        return done

    async def retry_dead_letter(
        self, client: WorkflowClient, tenant_id: str, letter_id: str, by: str
    ) -> str:
        """Parked to retrying, and a new workflow that runs the action again as a run
        would (measured before, checked, applied with retries, then Learn keeps or reverts
        it); one instance per claim, named by the attempts and the claim's time. 409 unless
        the tenant's policy allows the action now (the admin's retry is its approval).
        Answers the instance id."""
        await self.park_stale_retries(client, tenant_id, letter_id)
        letter, instance_id, claimed_at = await to_thread.run_sync(
            self._claim_retry, tenant_id, letter_id, by
        )
        retry_input = {
            "tenant_id": tenant_id,
            "dead_letter_id": letter_id,
            "action_id": letter.action_id,
            "retry_first_ms": self.retry_first_ms,
            "run_id": letter.run_id,
            "key": names.retry_key(letter.attempts, claimed_at),
        }
        try:
            return await client.start_new(names.RETRY_DEAD_LETTER, instance_id, retry_input)
        except BaseException as exc:
            with CancelScope(shield=True):
                started = await started_anyway(client, instance_id, exc)
                if started and isinstance(exc, Exception):  # a cancellation goes on up
                    return instance_id
                if started is False:
                    await to_thread.run_sync(
                        self._unclaim_retry, tenant_id, letter_id, instance_id, claimed_at
                    )
            raise

    def _claim_retry(
        self, tenant_id: str, letter_id: str, by: str
    ) -> tuple[DeadLetterRecord, str, datetime]:
        now = utcnow()
        with self.uow_factory(write=True, tenant_id=tenant_id) as uow:
            letter = self._letter(uow, tenant_id, letter_id)
            decision = self._policy(uow, tenant_id).decide(letter.name)
            if not decision.allowed:
                raise Conflict(
                    f"the tenant's policy disallows {letter.name} now ({decision.rule}); "
                    f"dead letter {letter_id} is retried only while its action is allowed",
                    rule=decision.rule,
                )
            instance_id = names.retry_instance_id(letter_id, letter.attempts, now)
            parked = [DeadLetterStatus.PARKED]
            if not uow.autonomy.transition_dead_letter(
                tenant_id, letter_id, parked, DeadLetterStatus.RETRYING, now, by
            ):
                raise _not_parked(letter_id, uow.autonomy.dead_letter(tenant_id, letter_id))
            if uow.workflow_runs.get(tenant_id, instance_id) is not None:
                raise Conflict(f"retry {instance_id} of dead letter {letter_id} exists already")
            uow.workflow_runs.add(WorkflowRun(instance_id, tenant_id, names.RETRY_DEAD_LETTER, now))
            uow.commit()
        return letter, instance_id, now

    def _unclaim_retry(
        self, tenant_id: str, letter_id: str, instance_id: str, claimed_at: datetime
    ) -> None:
        with self.uow_factory(write=True, tenant_id=tenant_id) as uow:
            retrying = [DeadLetterStatus.RETRYING]
            uow.autonomy.transition_dead_letter(
                tenant_id, letter_id, retrying, DeadLetterStatus.PARKED, utcnow(),
                updated_at=claimed_at,
            )  # fmt: skip
            uow.workflow_runs.delete(tenant_id, instance_id)
            uow.commit()

    async def discard_dead_letter(
        self, client: WorkflowClient | None, tenant_id: str, letter_id: str, by: str
    ) -> DeadLetterRecord:
        """Parked to discarded: the action is given up for good (a letter whose retry is
        no longer live counts as parked)."""
        await self.park_stale_retries(client, tenant_id, letter_id)
        return await to_thread.run_sync(self._discard, tenant_id, letter_id, by)

    def _discard(self, tenant_id: str, letter_id: str, by: str) -> DeadLetterRecord:
        now = utcnow()
        with self.uow_factory(write=True, tenant_id=tenant_id) as uow:
            self._letter(uow, tenant_id, letter_id)
            parked = [DeadLetterStatus.PARKED]
            if not uow.autonomy.transition_dead_letter(
                tenant_id, letter_id, parked, DeadLetterStatus.DISCARDED, now, by
            ):
                raise _not_parked(letter_id, uow.autonomy.dead_letter(tenant_id, letter_id))
            discarded = self._letter(uow, tenant_id, letter_id)
            uow.commit()
        return discarded


def _expire(uow: UnitOfWork, approval: ApprovalRecord, by: str, now: datetime) -> None:
    """Pending to expired, with its action, committed (compare-and-set: a decision that
    got there first stands)."""
    repo = uow.autonomy
    if repo.decide(approval.tenant_id, approval.id, ApprovalStatus.EXPIRED, by, now):
        repo.transition(
            approval.tenant_id, approval.action_id, [ActionStatus.AWAITING_APPROVAL],
            ActionStatus.EXPIRED, now, decided_by=by,
        )  # fmt: skip
        uow.commit()


def _require_scope(principal: Principal, action: ActionRecord | None) -> None:
    """The approving key's scope must allow what the action's spec needs (403)."""
    spec = REGISTRY.get(action.name) if action is not None else None
    if spec is None:
        raise Conflict("the approval's action is not a registered action; it cannot be approved")
    if not principal.scope.allows(spec.scope):
        raise Forbidden(
            f"this API key has scope '{principal.scope}'; approving {spec.name} needs "
            f"'{spec.scope}'",
            required_scope=spec.scope.value,
        )


def overdue(uow: UnitOfWork, run: RunRecord, policy: Policy, now: datetime) -> str | None:
    """Why an active run is presumed dead, or None while it may still be working: its
    phases may take ``max_duration_s`` (waiting for a human is not counted), each of its
    ``max_iterations`` may wait ``approval_timeout_s`` for its approvals (the policy's now,
    and at least until its last pending request expires), plus ``OVERDUE_MARGIN``."""
    limit = run.started_at + timedelta(
        seconds=run.max_duration_s + run.max_iterations * policy.approval_timeout_s
    )
    pending = uow.autonomy.pending_until(run.tenant_id, run.id)
    deadline = max(limit, pending or limit) + OVERDUE_MARGIN
    if now <= deadline:
        return None
    return (
        f"ended as overdue by a scheduled tick: active since {run.started_at.isoformat()}, "
        f"past {deadline.isoformat()} (max_duration_s + max_iterations x approval_timeout_s "
        f"+ {OVERDUE_MARGIN}); its workflow is presumed gone"
    )


def _live(status: Any) -> bool:
    runtime = runtime_status(status)
    return runtime is not None and runtime not in FINISHED


def _not_parked(letter_id: str, letter: DeadLetterRecord | None) -> Conflict:
    state = letter.status if letter else "gone"
    return Conflict(
        f"dead letter {letter_id} is {state}; only a parked one is retried or discarded",
        dead_letter_status=state,
    )


def _budget(
    default: Budget, credits: float | None, duration_s: int | None, iterations: int | None
) -> Budget:
    """The policy's budget with the caller's limits in its place (422 past the bounds)."""
    values = default.model_dump()
    for key, value in (
        ("credits", credits),
        ("duration_s", duration_s),
        ("max_iterations", iterations),
    ):
        if value is not None:
            values[key] = value
    try:
        return Budget.model_validate(values)
    except ValidationError as exc:
        raise UnprocessableContent(f"the run's budget is out of bounds: {exc}") from exc
