"""The loop's activities: what each phase does to the store, idempotent under replay.

Every activity takes one message and returns one (``messages.py``). Durable runs activities
at least once, so each is written to be run again: rows are insert-or-ignore by derived ids,
state changes compare-and-set, and Act and Learn read the action's status first (an action
applied, kept or reverted is not applied, measured or reverted again). Approval, Act and
Learn read the tenant's policy at that moment: the platform decides at the point of
execution, never the plan.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from hartonomous.autonomy import messages as m
from hartonomous.autonomy.actions.base import ActionContext, ActionExecutor, Measurement
from hartonomous.autonomy.analyze import Analyzer
from hartonomous.autonomy.loop import MEASURE_CREDITS
from hartonomous.autonomy.names import RunInput
from hartonomous.autonomy.planner import Planner
from hartonomous.autonomy.policy import Policy
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
    Phase,
    RunStatus,
)
from hartonomous.errors import Conflict, HartonomousError, NotFound
from hartonomous.inference.types import ModelRef
from hartonomous.knowledge.search import SearchService
from hartonomous.ports import Inference, UnitOfWorkFactory
from hartonomous.services.clock import utcnow

IDS = uuid.UUID("0b8e3f52-7d1a-5c6e-8f90-a1b2c3d4e5f6")  # uuid5 namespace: approvals, letters
DONE = {ActionStatus.APPLIED, ActionStatus.KEPT, ActionStatus.REVERTED, ActionStatus.UNCHANGED}
JUDGED = {ActionStatus.KEPT, ActionStatus.REVERTED, ActionStatus.UNCHANGED}


def derived_id(kind: str, of: str) -> str:
    return str(uuid.uuid5(IDS, f"{kind}:{of}"))


@dataclass
class LoopActivities:
    uow_factory: UnitOfWorkFactory
    policy: Callable[[str], Policy]  # AutonomyService.policy
    create_run: Callable[..., tuple[RunRecord, RunInput]]  # AutonomyService.create_run
    executors: Callable[[], Mapping[str, ActionExecutor]]
    search: Callable[[], SearchService]
    inference: Callable[[], Inference]
    model: Callable[[], ModelRef]
    clock: Callable[[], datetime] = utcnow
    analyzer: Analyzer = field(init=False)
    planner: Planner = field(init=False)

    def __post_init__(self) -> None:
        self.analyzer = Analyzer(self.uow_factory, self.search, self.policy, self.clock)
        self.planner = Planner(
            self.uow_factory, self.policy, self.executors, self.inference, self.model, self.clock
        )

    # -- Analyze, Hypothesize ----------------------------------------------------------------

    def analyze(self, data: dict[str, Any]) -> dict[str, Any]:
        inp = m.AnalyzeIn.from_json(data)
        ended = self._ended(inp.tenant_id, inp.run_id)
        if ended is not None:  # ended from outside (stale, overdue): no phase spends more
            return m.AnalyzeOut(None, 0, [], 0.0, ended=ended).to_json()
        return self.analyzer.analyze(inp).to_json()

    def _ended(self, tenant_id: str, run_id: str) -> str | None:
        """The run's status when it is no longer running, else None."""
        with self.uow_factory(write=False, tenant_id=tenant_id) as uow:
            run = uow.autonomy.run(tenant_id, run_id)
        if run is None or run.status == RunStatus.RUNNING:
            return None
        return run.status

    def hypothesize(self, data: dict[str, Any]) -> dict[str, Any]:
        return self.planner.hypothesize(m.HypothesizeIn.from_json(data)).to_json()

    # -- Approval ----------------------------------------------------------------------------

    def request_approvals(self, data: dict[str, Any]) -> dict[str, Any]:
        """An approval row per action (its id derived from the action's): pending with a
        deadline where the policy wants a human, decided at once by the rule where it does
        not; an action the policy now disallows is refused instead."""
        inp = m.ApprovalIn.from_json(data)
        ended = self._ended(inp.tenant_id, inp.run_id)
        if ended is not None:  # no request may wait on a run that has ended
            return m.ApprovalOut([], ended=ended).to_json()
        policy = self.policy(inp.tenant_id)
        requested = datetime.fromisoformat(inp.requested_at)
        expires = requested + timedelta(seconds=policy.approval_timeout_s)
        now = self.clock()
        out: list[m.ApprovalRequest] = []
        with self.uow_factory(write=True, tenant_id=inp.tenant_id) as uow:
            repo = uow.autonomy
            for action_id in inp.action_ids:
                action = _action(repo.action(inp.tenant_id, action_id), action_id)
                approval_id = derived_id("approval", action_id)
                decision = policy.decide(action.name)
                if not decision.allowed:
                    repo.transition(inp.tenant_id, action_id, [ActionStatus.PLANNED],
                                    ActionStatus.REFUSED, now, decided_by=decision.rule,
                                    error=f"the policy disallows {action.name}")  # fmt: skip
                    continue
                auto = not decision.needs_approval
                repo.add_approval(
                    ApprovalRecord(
                        id=approval_id, tenant_id=inp.tenant_id, run_id=inp.run_id,
                        action_id=action_id, instance_id=inp.instance_id,
                        status=ApprovalStatus.APPROVED if auto else ApprovalStatus.PENDING,
                        requested_at=requested, expires_at=expires,
                        decided_at=now if auto else None,
                        decided_by=decision.rule if auto else None, note=None,
                    )
                )  # fmt: skip
                repo.transition(
                    inp.tenant_id, action_id, [ActionStatus.PLANNED],
                    ActionStatus.APPROVED if auto else ActionStatus.AWAITING_APPROVAL, now,
                    decided_by=decision.rule if auto else None,
                )  # fmt: skip
                approval = repo.approval(inp.tenant_id, approval_id)
                assert approval is not None
                out.append(
                    m.ApprovalRequest(approval_id, action_id, approval.status,
                                      approval.decided_by, approval.expires_at.isoformat())
                )  # fmt: skip
            uow.commit()
        return m.ApprovalOut(out).to_json()

    def settle_approval(self, data: dict[str, Any]) -> dict[str, Any]:
        """The approval's status as stored; past the orchestrator's deadline a pending one
        expires now (compare-and-set: a decision that got there first stands)."""
        inp = m.SettleIn.from_json(data)
        now = self.clock()
        with self.uow_factory(write=True, tenant_id=inp.tenant_id) as uow:
            repo = uow.autonomy
            approval = repo.approval(inp.tenant_id, inp.approval_id)
            if approval is None:
                raise NotFound(f"no approval {inp.approval_id!r}")
            if inp.expire and repo.decide(
                inp.tenant_id, inp.approval_id, ApprovalStatus.EXPIRED, "timer", now
            ):
                repo.transition(inp.tenant_id, approval.action_id,
                                [ActionStatus.AWAITING_APPROVAL], ActionStatus.EXPIRED, now,
                                decided_by="timer")  # fmt: skip
                approval = repo.approval(inp.tenant_id, inp.approval_id)
                assert approval is not None
            uow.commit()
        return m.Decided(approval.id, approval.status, approval.decided_by).to_json()

    # -- the audit rows the orchestrator composes ------------------------------------------

    def record_phase(self, data: dict[str, Any]) -> bool:
        inp = m.PhaseIn.from_json(data)
        started, ended = (
            datetime.fromisoformat(inp.started_at),
            datetime.fromisoformat(inp.ended_at),
        )
        row = PhaseRecord(
            tenant_id=inp.tenant_id, run_id=inp.run_id, iteration=inp.iteration,
            phase=inp.phase, status=inp.status, inputs=inp.inputs, outputs=inp.outputs,
            decision=inp.decision, decider=inp.decider, cost_credits=inp.cost_credits,
            duration_ms=(ended - started).total_seconds() * 1000, started_at=started,
            ended_at=ended,
        )  # fmt: skip
        with self.uow_factory(write=True, tenant_id=inp.tenant_id) as uow:
            added = uow.autonomy.record_phase(row)
            uow.commit()
        return added

    # -- Act ---------------------------------------------------------------------------------

    def _context(self, action: ActionRecord, purpose: str = "measure") -> ActionContext:
        return ActionContext(
            action.tenant_id, action.run_id, action.id, dict(action.parameters), purpose
        )

    def _executor(self, name: str) -> ActionExecutor:
        executor = self.executors().get(name)
        if executor is None:
            raise NotFound(f"no executor for action {name!r}")
        return executor

    def baseline(self, data: dict[str, Any]) -> dict[str, Any]:
        """Just before Act: refuse a run's action if its run has ended or the policy
        disallows it now (it becomes refused), a dead letter's retry if the policy disallows
        it or its executor's check fails now (it stays dead-lettered: the data may have moved
        since it was parked; a run's plan was checked by Hypothesize, and an apply that
        fails on data moved since is retried and parked). Otherwise the metric before, kept on
        the action: a run measures once; each retry measures again under its key (what was
        true when the run planned may not be now)."""
        inp = m.ActIn.from_json(data)
        action = self._load(inp.tenant_id, inp.action_id)
        outcome = dict(action.outcome or {})
        key = inp.key if inp.retry else ""
        if action.status in DONE or (
            outcome.get("before") is not None and outcome.get("before_key", "") == key
        ):  # applied already, or measured by an earlier try of this activity
            return m.Baseline(action.id, outcome.get("before"), outcome.get("before_cost", 0.0),
                              None).to_json()  # fmt: skip
        refused = self._refusal(action, inp.retry)
        if refused is not None:
            rule, reason = refused
            if not inp.retry:
                with self.uow_factory(write=True, tenant_id=inp.tenant_id) as uow:
                    uow.autonomy.transition(inp.tenant_id, action.id, [ActionStatus.APPROVED],
                                            ActionStatus.REFUSED, self.clock(), decided_by=rule,
                                            error=reason)  # fmt: skip
                    uow.commit()
            return m.Baseline(action.id, None, 0.0, reason).to_json()
        purpose = f"{key}:before" if key else "before"
        measured = self._executor(action.name).measure(self._context(action, purpose))
        cost = measured_cost(measured)
        with self.uow_factory(write=True, tenant_id=inp.tenant_id) as uow:
            current = _action(uow.autonomy.action(inp.tenant_id, inp.action_id), inp.action_id)
            stored = dict(current.outcome or {})
            if stored.get("before") is None or stored.get("before_key", "") != key:
                stored |= {"before": measured.value, "before_details": measured.details,
                           "before_cost": cost, "before_key": key}  # fmt: skip
                uow.autonomy.update_action(inp.tenant_id, inp.action_id, self.clock(),
                                           outcome=stored)  # fmt: skip
                uow.commit()
        return m.Baseline(inp.action_id, float(stored["before"]), float(stored["before_cost"]),
                          None).to_json()  # fmt: skip

    def _refusal(self, action: ActionRecord, retry: bool) -> tuple[str, str] | None:
        """(the rule, why) when the action must not run now; None when it may."""
        if not retry:
            with self.uow_factory(write=False, tenant_id=action.tenant_id) as uow:
                run = uow.autonomy.run(action.tenant_id, action.run_id)
            if run is None or run.status != RunStatus.RUNNING:
                state = run.status if run else "gone"
                return RUN_ENDED, f"its run {action.run_id} has ended ({state})"
        decision = self.policy(action.tenant_id).decide(action.name)
        if not decision.allowed:
            return decision.rule, f"the policy disallows {action.name} now ({decision.rule})"
        if retry:  # a run's plan was checked by Hypothesize; a parked one may be stale
            try:
                self._executor(action.name).check(self._context(action, "check"))
            except HartonomousError as exc:
                return f"check:{action.name}", f"its check refused it: {exc.detail}"
        return None

    def act(self, data: dict[str, Any]) -> dict[str, Any]:
        """Apply an approved action (a dead letter's retry: a dead-lettered one); an action
        applied already answers its stored result; any other status runs nothing. Right
        before applying, the baseline's refusals are asked again (the run ended, the policy
        changed, during the baseline's measurement or between Act's retries): refused the
        same way, with ``refused`` set, never applied."""
        inp = m.ActIn.from_json(data)
        action = self._load(inp.tenant_id, inp.action_id)
        if action.status in DONE:
            return m.ActOut(action.id, action.name, True, action.result).to_json()
        ready = ActionStatus.DEAD_LETTERED if inp.retry else ActionStatus.APPROVED
        if action.status != ready:
            return m.ActOut(action.id, action.name, False, None).to_json()
        refused = self._refusal(action, inp.retry)
        if refused is not None:
            rule, reason = refused
            if not inp.retry:  # a retry's letter is parked again by the orchestrator
                with self.uow_factory(write=True, tenant_id=inp.tenant_id) as uow:
                    uow.autonomy.transition(inp.tenant_id, action.id, [ready],
                                            ActionStatus.REFUSED, self.clock(), decided_by=rule,
                                            error=reason)  # fmt: skip
                    uow.commit()
            return m.ActOut(action.id, action.name, False, None, reason).to_json()
        result = self._executor(action.name).apply(self._context(action))
        now = self.clock()
        with self.uow_factory(write=True, tenant_id=inp.tenant_id) as uow:
            uow.autonomy.transition(inp.tenant_id, action.id, [ready], ActionStatus.APPLIED, now,
                                    result=result, applied_at=now, error=None)  # fmt: skip
            uow.commit()
        return m.ActOut(action.id, action.name, True, result).to_json()

    def dead_letter(self, data: dict[str, Any]) -> dict[str, Any]:
        """Park the action with its error and attempts and say what the policy does next.
        Run again (at least once), it changes nothing; only a letter being retried is parked
        again, with the failed retry's attempts added (``store.park``)."""
        inp = m.DeadLetterIn.from_json(data)
        action = self._load(inp.tenant_id, inp.action_id)
        now = self.clock()
        letter_id = derived_id("dead_letter", action.id)
        with self.uow_factory(write=True, tenant_id=inp.tenant_id) as uow:
            repo = uow.autonomy
            repo.park(
                DeadLetterRecord(
                    id=letter_id, tenant_id=inp.tenant_id, run_id=action.run_id,
                    action_id=action.id, name=action.name, parameters=action.parameters,
                    error=inp.error[:4000], attempts=inp.attempts,
                    status=DeadLetterStatus.PARKED, created_at=now, updated_at=now,
                    resolved_by=None,
                )
            )  # fmt: skip
            stored = repo.dead_letter(inp.tenant_id, letter_id)
            repo.transition(inp.tenant_id, action.id,
                            [ActionStatus.APPROVED, ActionStatus.DEAD_LETTERED],
                            ActionStatus.DEAD_LETTERED, now, error=inp.error[:4000],
                            attempts=stored.attempts if stored else inp.attempts)  # fmt: skip
            uow.commit()
        policy = self.policy(inp.tenant_id)
        return m.DeadLetterOut(stored.id if stored else letter_id,
                               policy.on_action_failure).to_json()  # fmt: skip

    def resolve_dead_letter(self, data: dict[str, Any]) -> bool:
        inp = m.ResolveIn.from_json(data)
        with self.uow_factory(write=True, tenant_id=inp.tenant_id) as uow:
            done = uow.autonomy.transition_dead_letter(
                inp.tenant_id, inp.dead_letter_id,
                [DeadLetterStatus.RETRYING, DeadLetterStatus.PARKED],
                DeadLetterStatus.RESOLVED, self.clock(), "retry",
            )  # fmt: skip
            uow.commit()
        return done

    # -- Learn -------------------------------------------------------------------------------

    def learn(self, data: dict[str, Any]) -> dict[str, Any]:
        """Measure again; an improvement (strictly higher) keeps the action, none reverts a
        reversible one and leaves the others unchanged. Recorded on the action and, for a
        run, in its learn phase row (a dead letter's retry has no run to audit: its outcome
        is on the action and in the retry's output). Charged what each measurement cost."""
        inp = m.LearnIn.from_json(data)
        started, began = self.clock(), time.perf_counter()
        purpose = f"{inp.retry}:after" if inp.retry else "after"
        judged = [self._judge(inp.tenant_id, action_id, purpose) for action_id in inp.action_ids]
        outcomes = [o for o, _ in judged]
        cost = round(sum(c for _, c in judged), 6)
        if inp.retry:
            return m.LearnOut(outcomes, cost).to_json()
        kept = sum(o.status == ActionStatus.KEPT for o in outcomes)
        row = PhaseRecord(
            tenant_id=inp.tenant_id, run_id=inp.run_id, iteration=inp.iteration,
            phase=Phase.LEARN, status="completed", inputs={"action_ids": inp.action_ids},
            outputs={"outcomes": [o.to_json() for o in outcomes]},
            decision=f"{kept} of {len(outcomes)} kept", decider="learn:metric",
            cost_credits=cost, duration_ms=(time.perf_counter() - began) * 1000,
            started_at=started, ended_at=self.clock(),
        )  # fmt: skip
        with self.uow_factory(write=True, tenant_id=inp.tenant_id) as uow:
            uow.autonomy.record_phase(row)
            uow.commit()
        return m.LearnOut(outcomes, cost).to_json()

    def _judge(self, tenant_id: str, action_id: str, purpose: str) -> tuple[m.Outcome, float]:
        """The outcome and what measuring it cost (nothing when it was not measured now)."""
        action = self._load(tenant_id, action_id)
        outcome = dict(action.outcome or {})
        if action.status in JUDGED:  # judged by an earlier try: charged what it cost then
            if action.status == ActionStatus.REVERTED:  # that try may have died before it
                self._executor(action.name).revert(
                    self._context(action, purpose), action.result or {}
                )  # idempotent
            return _outcome(action, outcome), float(outcome.get("after_cost", 0.0))
        if action.status != ActionStatus.APPLIED:  # not applied: nothing to judge
            return m.Outcome(action.id, action.name, outcome.get("before"), None, False, False,
                             action.status), 0.0  # fmt: skip
        executor = self._executor(action.name)
        ctx = self._context(action, purpose)
        after = executor.measure(ctx)
        cost = measured_cost(after)
        before = outcome.get("before")
        improved = before is not None and after.value > float(before)
        reversible = REGISTRY[action.name].reversible
        status = ActionStatus.KEPT
        if not improved:
            status = ActionStatus.REVERTED if reversible else ActionStatus.UNCHANGED
        outcome |= {"after": after.value, "after_details": after.details, "after_cost": cost,
                    "improved": improved, "reverted": status == ActionStatus.REVERTED}  # fmt: skip
        now = self.clock()
        with self.uow_factory(write=True, tenant_id=tenant_id) as uow:
            uow.autonomy.transition(
                tenant_id, action.id, [ActionStatus.APPLIED], status, now, outcome=outcome,
                **({"reverted_at": now} if status == ActionStatus.REVERTED else {}),
            )  # fmt: skip
            uow.commit()
        # The verdict is recorded first: a re-run after a crash finds it and reverts again
        # (idempotent) rather than measuring a state already reverted.
        if status == ActionStatus.REVERTED:
            executor.revert(ctx, action.result or {})
        return _outcome(self._load(tenant_id, action_id), outcome), cost

    def _load(self, tenant_id: str, action_id: str) -> ActionRecord:
        with self.uow_factory(write=False, tenant_id=tenant_id) as uow:
            return _action(uow.autonomy.action(tenant_id, action_id), action_id)

    # -- the end, the schedule ---------------------------------------------------------------

    def finish(self, data: dict[str, Any]) -> bool:
        """End the run row (once: a replay finds it ended and changes nothing)."""
        inp = m.FinishIn.from_json(data)
        with self.uow_factory(write=True, tenant_id=inp.tenant_id) as uow:
            ended = uow.autonomy.end_run(
                inp.tenant_id, inp.run_id, inp.status, self.clock(),
                summary=inp.summary, error=inp.error,
            )  # fmt: skip
            if ended:
                uow.autonomy.update_run(inp.tenant_id, inp.run_id, iterations=inp.iterations)
            uow.commit()
        return ended

    def schedule_policy(self, data: dict[str, Any]) -> dict[str, Any]:
        schedule = self.policy(m.TenantIn.from_json(data).tenant_id).schedule
        return m.ScheduleOut(schedule.enabled, schedule.every_minutes).to_json()

    def start_scheduled(self, data: dict[str, Any]) -> dict[str, Any]:
        """A run for the schedule's tick; none while another is active (that tick is
        skipped) or when the schedule was turned off meanwhile. An active run that is
        overdue (``service.overdue``: its workflow is presumed gone) is ended first. The
        run's id is derived from the schedule's instance and the tick's due time, so a re-run
        of this activity gets the run it created back (it found it active and skipped,
        leaving a running row no workflow would ever end)."""
        tick = m.TenantIn.from_json(data)
        tenant_id = tick.tenant_id
        if not self.policy(tenant_id).schedule.enabled:
            return m.Started(None, "disabled").to_json()
        run_id = derived_id("scheduled_run", f"{tick.schedule}:{tick.due}") if tick.due else None
        try:
            run, run_input = self.create_run(
                tenant_id, origin="schedule", end_overdue=True, run_id=run_id
            )
        except Conflict:
            return m.Started(None, "active_run").to_json()
        if run.status != RunStatus.RUNNING:  # this tick's run, ended meanwhile (by hand)
            return m.Started(None, "ended").to_json()
        return m.Started(run_input.to_json(), "started").to_json()


def measured_cost(measured: Measurement) -> float:
    """What a measurement cost: the credits its replay reported (``details["cost_credits"]``,
    e.g. cache_answer's model calls), else the flat estimate ``MEASURE_CREDITS``."""
    reported = measured.details.get("cost_credits")
    if isinstance(reported, int | float) and not isinstance(reported, bool):
        return round(float(reported), 6)
    return MEASURE_CREDITS


def _action(action: ActionRecord | None, action_id: str) -> ActionRecord:
    if action is None:
        raise NotFound(f"no action {action_id!r}")
    return action


def _outcome(action: ActionRecord, outcome: dict[str, Any]) -> m.Outcome:
    return m.Outcome(
        action.id, action.name, outcome.get("before"), outcome.get("after"),
        bool(outcome.get("improved")), bool(outcome.get("reverted")), action.status,
    )  # fmt: skip
