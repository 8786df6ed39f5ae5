"""The loop's orchestrations: a run (Analyze, Hypothesize, Approval, Act, Learn, then
continue-as-new), the per-tenant schedule, and a dead letter's retry.

Rules the code below keeps (docs/autonomy.md states them for users):

- Budget and duration are checked by the orchestrator, deterministically, before each phase:
  ``spent + the phase's estimate > budget`` ends the run ``budget_exhausted``; elapsed time
  (orchestrator clock since ``started_at``, less the time spent waiting for a human) at or
  over ``max_duration_s`` ends it ``duration_exhausted``. Nothing is stopped mid-phase: Act,
  once started, runs each approved action to its end. Estimates: Analyze ``ANALYZE_CREDITS``
  (its searches), Hypothesize ``HYPOTHESIZE_CREDITS`` (a full prompt and ``MAX_PLAN_TOKENS``),
  Approval nothing, Act the registry's cost of each approved action (also what it is
  charged) plus ``MEASURE_CREDITS`` for its baseline and as much for its Learn. Learn is
  never gated: once Act applied an action, judging it finishes it. So before applying each
  action Act checks that the budget still covers it and the Learn of everything applied
  (each estimated at its baseline's reported cost); one that does not fit is not applied
  and the run ends ``budget_exhausted`` after Learn.
  A measurement (baseline or Learn) is charged what its replay cost when the executor
  reports it (``Measurement.details["cost_credits"]``), else ``MEASURE_CREDITS``.
- Each activity reports what it cost; the orchestrator adds it up and carries ``spent``
  through continue-as-new. The run row's ``spent_credits`` is the sum of its phase rows.
- Approval: a pending request waits for ``names.approval_event(id)`` raced against a timer at
  ``min(expires_at, now + 6 days)`` (one Durable timer cannot be longer), in a loop; when
  the deadline passes, an activity expires it compare-and-set, and the store's answer wins
  (a decision that raced the timer stands). The event only wakes the run: Act re-reads the
  action and runs it only when the store says approved. An event that decided nothing
  (the store still says pending) is not waited on again (the SDK keeps an event raised
  early and every later wait for that name would win at once): the wait then polls the
  store every ``POLL_INTERVAL`` until the deadline. The API refuses ``approval-*`` events
  on a run from ``/v1/workflows``: decisions go through ``/v1/approvals``.
- Act first takes the action's baseline, which refuses it at the point of execution when
  its run has ended or the policy disallows it now (recorded, never applied, not charged
  the action's cost); then it retries the action with exponential backoff
  (``retry_first_ms``, doubling, 6 attempts: 1, 2, 4, 8, 16 s by default); one still
  failing is parked as a dead letter and the policy's ``on_action_failure`` continues with
  the next action or ends the run ``stopped``.
  ``retry_failed_workflow`` starts the failed workflow again as a sub-orchestration named
  by its result; that workflow failing again is the action's outcome, not its failure.
- An iteration ends with Learn; the next one is a continue-as-new carrying the spend, the
  waited time and the problem keys handled, so no problem is taken twice in one run.
- Baseline and Learn are retried with Act's backoff, ``MEASURE_ATTEMPTS`` tries. A Learn
  still failing ends the run ``failed``; its summary lists the applied actions left
  unjudged (``unjudged``, ``learn_error``): they stay ``applied`` for a person to judge.
- A bug in the orchestration ends the run ``failed`` with the error, then re-raises.
- A dead letter's retry (``retry_dead_letter``) runs the action as a run would: baseline
  (refused when the policy disallows it or its executor's check fails now: the letter is
  parked again, its attempts unchanged), Act with the same retries, then Learn keeps or
  reverts it. Its measurements' usage is keyed by the action (one letter per action) and
  the retry's key (attempts and claim time); what it cost is in its output (there is no
  run to charge).
"""

from __future__ import annotations

from collections.abc import Generator
from datetime import datetime, timedelta
from typing import Any

import azure.durable_functions as df

from hartonomous.autonomy import messages as m
from hartonomous.autonomy import names
from hartonomous.autonomy.approval_wait import POLL_INTERVAL as POLL_INTERVAL
from hartonomous.autonomy.approval_wait import TIMER_CAP, decision
from hartonomous.autonomy.names import RunInput
from hartonomous.autonomy.registry import REGISTRY
from hartonomous.autonomy.types import ApprovalStatus, Phase, RunStatus
from hartonomous.metering.pricing import price
from hartonomous.workflows.actions import BackoffRetryOptions

# Activities (the orchestrations' names are in names.py: the API starts those).
ANALYZE = "autonomy_analyze"
HYPOTHESIZE = "autonomy_hypothesize"
REQUEST_APPROVALS = "autonomy_request_approvals"
SETTLE_APPROVAL = "autonomy_settle_approval"
RECORD_PHASE = "autonomy_record_phase"
BASELINE = "autonomy_baseline"
ACT = "autonomy_act"
DEAD_LETTER = "autonomy_dead_letter"
LEARN = "autonomy_learn"
FINISH = "autonomy_finish"
SCHEDULE_POLICY = "autonomy_schedule_policy"
START_SCHEDULED = "autonomy_start_scheduled"
RESOLVE_DEAD_LETTER = "autonomy_resolve_dead_letter"

MAX_PLAN_TOKENS = 200
PROMPT_TOKENS_ESTIMATE = 1024  # the most of a plan's prompt (the planner trims evidence)
ANALYZE_CREDITS = price({"search.queries": 3}).credits  # at most 3 candidate searches
HYPOTHESIZE_CREDITS = price(
    {
        "generation.prompt_tokens": PROMPT_TOKENS_ESTIMATE,
        "generation.completion_tokens": MAX_PLAN_TOKENS,
    }
).credits
MEASURE_CREDITS = 0.01  # a measurement's estimate (baseline, Learn) when it reports none
ACT_ATTEMPTS = 6
MEASURE_ATTEMPTS = 3  # a baseline's or Learn's activity: the same backoff, fewer tries

Orchestration = Generator[Any, Any, Any]


def act_retry(retry_first_ms: int) -> BackoffRetryOptions:
    return BackoffRetryOptions(retry_first_ms, ACT_ATTEMPTS, backoff_coefficient=2.0)


def measure_retry(retry_first_ms: int) -> BackoffRetryOptions:
    return BackoffRetryOptions(retry_first_ms, MEASURE_ATTEMPTS, backoff_coefficient=2.0)


def _iso(at: datetime) -> str:
    return at.isoformat()


class _Stop(Exception):
    """Ends the run with a status (not an error)."""

    def __init__(self, status: RunStatus) -> None:
        super().__init__(status.value)
        self.status = status


class _Run:
    """One execution (one iteration) of a run; state the orchestrator carries."""

    def __init__(self, context: df.DurableOrchestrationContext, inp: RunInput) -> None:
        self.context = context
        self.inp = inp
        self.spent = inp.spent_credits
        self.waited = inp.waited_s
        self.started = datetime.fromisoformat(inp.started_at)
        self.summary: dict[str, Any] = {"iteration": inp.iteration}

    @property
    def now(self) -> datetime:
        return self.context.current_utc_datetime  # type: ignore[no-any-return]

    def show(self, phase: Phase) -> None:
        self.context.set_custom_status(
            {"run_id": self.inp.run_id, "iteration": self.inp.iteration, "phase": phase.value,
             "spent_credits": round(self.spent, 6)}
        )  # fmt: skip

    def gate(self, phase: Phase, estimate: float) -> None:
        """Before a phase: would it pass the budget, or is the time up?"""
        self.show(phase)
        if self.spent + estimate > self.inp.budget_credits:
            self.summary["stopped_before"] = phase.value
            raise _Stop(RunStatus.BUDGET_EXHAUSTED)
        elapsed = (self.now - self.started).total_seconds() - self.waited
        if elapsed >= self.inp.max_duration_s:
            self.summary["stopped_before"] = phase.value
            raise _Stop(RunStatus.DURATION_EXHAUSTED)

    def phase_row(
        self, phase: Phase, started: datetime, outputs: dict[str, Any], *,
        inputs: dict[str, Any] | None = None, decision: str | None = None,
        decider: str | None = None, cost: float = 0.0, status: str = "completed",
    ) -> Any:  # fmt: skip
        row = m.PhaseIn(
            self.inp.tenant_id, self.inp.run_id, self.inp.iteration, phase.value, status,
            inputs or {}, outputs, decision, decider, cost, _iso(started), _iso(self.now),
        )  # fmt: skip
        return self.context.call_activity(RECORD_PHASE, row.to_json())

    # -- the phases ------------------------------------------------------------------------

    def iteration(self) -> Orchestration:
        """Returns None when the next iteration should follow, or raises _Stop."""
        ctx, inp = self.context, self.inp
        self.gate(Phase.ANALYZE, ANALYZE_CREDITS)
        analyzed = m.AnalyzeOut.from_json(
            (yield ctx.call_activity(
                ANALYZE, m.AnalyzeIn(inp.tenant_id, inp.run_id, inp.iteration,
                                     list(inp.handled)).to_json()))
        )  # fmt: skip
        if analyzed.ended:
            raise _Stop(RunStatus(analyzed.ended))
        self.spent += analyzed.cost_credits
        problem = analyzed.problem
        if problem is None:
            done = inp.iteration == 1
            raise _Stop(RunStatus.NOTHING_TO_DO if done else RunStatus.COMPLETED)
        self.summary["problem"] = {"kind": problem.kind, "key": problem.key}

        self.gate(Phase.HYPOTHESIZE, HYPOTHESIZE_CREDITS)
        plan = m.HypothesizeOut.from_json(
            (yield ctx.call_activity(
                HYPOTHESIZE, m.HypothesizeIn(inp.tenant_id, inp.run_id, inp.iteration,
                                             problem).to_json()))
        )  # fmt: skip
        self.spent += plan.cost_credits
        self.summary |= {"planned_by": plan.planned_by, "refused": len(plan.refused)}
        if not plan.actions:
            return problem.key

        approved = yield from self.approval(plan.actions)
        if approved:
            applied = yield from self.act(approved)
            if applied:
                yield from self.learn(applied)
        return problem.key

    def approval(self, actions: list[m.PlannedAction]) -> Orchestration:
        ctx, inp = self.context, self.inp
        self.gate(Phase.APPROVAL, 0.0)
        began = self.now
        requested = m.ApprovalOut.from_json(
            (yield ctx.call_activity(
                REQUEST_APPROVALS, m.ApprovalIn(inp.tenant_id, inp.run_id, inp.iteration,
                                                ctx.instance_id, [a.id for a in actions],
                                                _iso(began)).to_json()))
        )  # fmt: skip
        if requested.ended:
            raise _Stop(RunStatus(requested.ended))
        decisions: list[dict[str, Any]] = []
        for request in requested.requests:
            status, by = request.status, request.decided_by
            if status == ApprovalStatus.PENDING:
                waiting_from = self.now
                status, by = yield from self.wait(request)
                self.waited += (self.now - waiting_from).total_seconds()
            decisions.append(
                {"approval_id": request.approval_id, "action_id": request.action_id,
                 "status": status, "decided_by": by}
            )  # fmt: skip
        # Paired by action id: an action the policy disallowed since the plan has no request
        # (request_approvals refused it), so it is recorded as refused here.
        asked = {d["action_id"] for d in decisions}
        decisions += [
            {"approval_id": None, "action_id": a.id, "status": "refused",
             "decided_by": "policy:disallowed"}
            for a in actions if a.id not in asked
        ]  # fmt: skip
        status_of = {d["action_id"]: d["status"] for d in decisions}
        approved = [a for a in actions if status_of[a.id] == ApprovalStatus.APPROVED]
        yield self.phase_row(
            Phase.APPROVAL, began, {"decisions": decisions},
            decision=f"{len(approved)} of {len(actions)} approved",
            decider=_deciders(decisions),
        )  # fmt: skip
        self.summary["approved"] = len(approved)
        return approved

    def wait(self, request: m.ApprovalRequest) -> Orchestration:
        """The admin's decision, or the expiry (``approval_wait``: the store's answer)."""
        ctx, tenant = self.context, self.inp.tenant_id

        def settle(expire: bool) -> Any:
            settle_in = m.SettleIn(tenant, request.approval_id, expire)
            return ctx.call_activity(SETTLE_APPROVAL, settle_in.to_json())

        deadline = datetime.fromisoformat(request.expires_at)
        decided = m.Decided.from_json(
            (yield from decision(ctx, request.approval_id, deadline, settle))
        )
        return decided.status, decided.decided_by

    def act(self, approved: list[m.PlannedAction]) -> Orchestration:
        ctx, inp = self.context, self.inp
        # Reserves each action's baseline and its Learn: once applied, Learn always runs.
        self.gate(Phase.ACT, sum(a.cost_credits + 2 * MEASURE_CREDITS for a in approved))
        began = self.now
        results: list[dict[str, Any]] = []
        applied: list[str] = []
        stop = over_budget = False
        cost = learn_reserve = 0.0
        for action in approved:
            act_in = m.ActIn(inp.tenant_id, action.id).to_json()
            base = m.Baseline.from_json(
                (yield ctx.call_activity_with_retry(
                    BASELINE, measure_retry(inp.retry_first_ms), act_in))
            )  # fmt: skip
            cost += base.cost_credits
            self.spent += base.cost_credits
            if base.refused is not None:
                results.append({"action_id": action.id, "name": action.name,
                                "status": "refused", "reason": base.refused})  # fmt: skip
                continue
            # Learn measures as the baseline did: its reported cost is the estimate.
            learn_estimate = base.cost_credits or MEASURE_CREDITS
            reserve = action.cost_credits + learn_reserve + learn_estimate
            if self.spent + reserve > inp.budget_credits:
                results.append({"action_id": action.id, "name": action.name,
                                "status": "not_applied",
                                "reason": "the budget cannot cover it and its Learn"})  # fmt: skip
                over_budget = True
                break
            cost += action.cost_credits
            try:
                out = m.ActOut.from_json(
                    (yield ctx.call_activity_with_retry(ACT, act_retry(inp.retry_first_ms), act_in))
                )
            except Exception as exc:
                parked = m.DeadLetterOut.from_json(
                    (yield ctx.call_activity(
                        DEAD_LETTER, m.DeadLetterIn(inp.tenant_id, action.id, str(exc)[:4000],
                                                    ACT_ATTEMPTS).to_json()))
                )  # fmt: skip
                self.spent += action.cost_credits
                results.append({"action_id": action.id, "name": action.name,
                                "status": "dead_lettered",
                                "dead_letter_id": parked.dead_letter_id})  # fmt: skip
                if parked.on_action_failure == "stop":
                    stop = True
                    break
                continue
            if out.refused is not None:  # refused right before applying, as by the baseline
                cost -= action.cost_credits
                results.append({"action_id": action.id, "name": action.name,
                                "status": "refused", "reason": out.refused})  # fmt: skip
                continue
            self.spent += action.cost_credits
            entry: dict[str, Any] = {"action_id": action.id, "name": action.name,
                                     "status": "applied" if out.applied else "skipped"}  # fmt: skip
            if out.applied:
                applied.append(action.id)
                learn_reserve += learn_estimate
                workflow = (out.result or {}).get("instance_id")
                if action.name == "retry_failed_workflow" and workflow:
                    entry["workflow"] = yield from _rerun(ctx, out.result or {})
            results.append(entry)
        yield self.phase_row(
            Phase.ACT, began, {"actions": results},
            decision=f"{len(applied)} applied", decider="policy:on_action_failure=stop"
            if stop else None, cost=round(cost, 6),
            status="stopped" if stop else "completed",
        )  # fmt: skip
        self.summary["applied"] = len(applied)
        if stop or over_budget:
            if applied:
                yield from self.learn(applied)
            if over_budget:
                self.summary["stopped_before"] = Phase.ACT.value
            raise _Stop(RunStatus.STOPPED if stop else RunStatus.BUDGET_EXHAUSTED)
        return applied

    def learn(self, applied: list[str]) -> Orchestration:
        """Never gated: judging (and reverting) what Act applied finishes the action; Act's
        gate reserved what it costs."""
        inp = self.inp
        self.show(Phase.LEARN)
        learn_in = m.LearnIn(inp.tenant_id, inp.run_id, inp.iteration, applied).to_json()
        try:
            learned = m.LearnOut.from_json(
                (yield self.context.call_activity_with_retry(
                    LEARN, measure_retry(inp.retry_first_ms), learn_in))
            )  # fmt: skip
        except Exception as exc:  # the run fails; its summary names what is left unjudged
            self.summary |= {"unjudged": list(applied), "learn_error": str(exc)[:500]}
            raise
        self.spent += learned.cost_credits
        self.summary["outcomes"] = {o.action_id: o.status for o in learned.outcomes}


def _deciders(decisions: list[dict[str, Any]]) -> str:
    """Who decided, for the row's 100-character ``decider``: every decider when they fit,
    else how many (never one cut in half); each decision's own is in the row's outputs."""
    deciders = sorted({str(d["decided_by"]) for d in decisions})
    joined = ",".join(deciders)
    return joined if len(joined) <= 100 else f"{len(deciders)} deciders: see outputs.decisions"


def _rerun(context: df.DurableOrchestrationContext, result: dict[str, Any]) -> Orchestration:
    """The failed workflow again, as a sub-orchestration; its failure is an outcome."""
    try:
        yield context.call_sub_orchestrator(
            result["name"], result.get("input"), result["instance_id"]
        )
        return {"instance_id": result["instance_id"], "status": "completed"}
    except Exception as exc:
        return {"instance_id": result["instance_id"], "status": "failed", "error": str(exc)[:500]}


def run(context: df.DurableOrchestrationContext) -> Orchestration:
    """``names.RUN``: one iteration per execution; continue-as-new for the next."""
    inp = RunInput.from_json(context.get_input())
    state = _Run(context, inp)
    status: RunStatus | None = None
    try:
        try:
            key = yield from state.iteration()
        except _Stop as stop:
            status, key = stop.status, None
        if status is None:
            if inp.iteration < inp.max_iterations:
                handled = [*inp.handled, key] if key else list(inp.handled)
                context.continue_as_new(
                    RunInput(**{**inp.to_json(), "iteration": inp.iteration + 1,
                                "spent_credits": round(state.spent, 6), "handled": handled,
                                "waited_s": state.waited}).to_json()
                )  # fmt: skip
                return None
            status = RunStatus.COMPLETED
    except Exception as exc:
        yield context.call_activity(FINISH, _finish(state, RunStatus.FAILED, str(exc)[:4000]))
        raise
    state.summary |= {"status": status.value, "spent_credits": round(state.spent, 6)}
    yield context.call_activity(FINISH, _finish(state, status))
    return state.summary


def _finish(state: _Run, status: RunStatus, error: str | None = None) -> dict[str, Any]:
    inp = state.inp
    return m.FinishIn(
        inp.tenant_id, inp.run_id, status.value, inp.iteration, round(state.spent, 6),
        state.summary, error,
    ).to_json()  # fmt: skip


def schedule(context: df.DurableOrchestrationContext) -> Orchestration:
    """``names.SCHEDULE``: eternal per tenant; each tick waits, then starts a run (a tick
    while a run is active is skipped; an active run overdue past all its limits is ended
    ``failed`` first, see ``service.overdue``), then continues as new. A disabled schedule
    ends it."""
    tenant = m.TenantIn.from_json(context.get_input())
    policy = m.ScheduleOut.from_json(
        (yield context.call_activity(SCHEDULE_POLICY, tenant.to_json()))
    )
    if not policy.enabled:
        return {"enabled": False}
    due = context.current_utc_datetime + timedelta(minutes=policy.every_minutes)
    while context.current_utc_datetime < due:
        yield context.create_timer(min(due, context.current_utc_datetime + TIMER_CAP))
    tick = m.TenantIn(tenant.tenant_id, context.instance_id, _iso(due))  # names the tick's run
    started = m.Started.from_json((yield context.call_activity(START_SCHEDULED, tick.to_json())))
    if started.reason == "disabled":
        return {"enabled": False}
    last: dict[str, Any] = {"reason": started.reason}
    if started.run_input is not None:
        run_input = RunInput.from_json(started.run_input)
        last["run_id"] = run_input.run_id
        try:
            yield context.call_sub_orchestrator(
                names.RUN, run_input.to_json(), names.run_instance_id(run_input.run_id)
            )
        except Exception as exc:  # the run recorded its own failure; the schedule goes on
            last["error"] = str(exc)[:500]
    context.set_custom_status({"last_tick": last})
    context.continue_as_new(tenant.to_json())
    return None


def retry_dead_letter(context: df.DurableOrchestrationContext) -> Orchestration:
    """``names.RETRY_DEAD_LETTER``: the action again as a run would (baseline and its
    refusals, Act with the same retries, then Learn). Success resolves the dead letter; a
    refusal parks it again (attempts unchanged: nothing ran), a failure too with the
    attempts added."""
    inp = m.RetryIn.from_json(context.get_input())
    key = inp.key or context.instance_id  # the API always names one
    act_in = m.ActIn(inp.tenant_id, inp.action_id, retry=True, key=key).to_json()
    base = m.Baseline.from_json(
        (yield context.call_activity_with_retry(
            BASELINE, measure_retry(inp.retry_first_ms), act_in))
    )  # fmt: skip
    cost = base.cost_credits
    if base.refused is not None:
        refused = m.DeadLetterIn(inp.tenant_id, inp.action_id,
                                 f"refused before acting: {base.refused}", 0)  # fmt: skip
        yield context.call_activity(DEAD_LETTER, refused.to_json())
        return {"status": "parked", "refused": base.refused, "cost_credits": round(cost, 6)}
    try:
        out = m.ActOut.from_json(
            (yield context.call_activity_with_retry(ACT, act_retry(inp.retry_first_ms), act_in))
        )
    except Exception as exc:
        dead = m.DeadLetterIn(inp.tenant_id, inp.action_id, str(exc)[:4000], ACT_ATTEMPTS)
        yield context.call_activity(DEAD_LETTER, dead.to_json())
        return {"status": "parked", "error": str(exc)[:500], "cost_credits": round(cost, 6)}
    if out.refused is not None:  # refused right before applying: parked again, as above
        again = m.DeadLetterIn(inp.tenant_id, inp.action_id,
                               f"refused before acting: {out.refused}", 0)  # fmt: skip
        yield context.call_activity(DEAD_LETTER, again.to_json())
        return {"status": "parked", "refused": out.refused, "cost_credits": round(cost, 6)}
    spec = REGISTRY.get(out.name)
    cost += spec.cost_credits if spec is not None else 0.0
    summary: dict[str, Any] = {"status": "resolved", "applied": out.applied}
    if out.applied:
        if out.name == "retry_failed_workflow" and (out.result or {}).get("instance_id"):
            summary["workflow"] = yield from _rerun(context, out.result or {})
        learn_in = m.LearnIn(inp.tenant_id, inp.run_id, 0, [inp.action_id], retry=key)
        learned = m.LearnOut.from_json(
            (yield context.call_activity_with_retry(
                LEARN, measure_retry(inp.retry_first_ms), learn_in.to_json()))
        )  # fmt: skip
        cost += learned.cost_credits
        summary["outcomes"] = {o.action_id: o.status for o in learned.outcomes}
    resolve = m.ResolveIn(inp.tenant_id, inp.dead_letter_id)
    yield context.call_activity(RESOLVE_DEAD_LETTER, resolve.to_json())
    return summary | {"cost_credits": round(cost, 6)}
