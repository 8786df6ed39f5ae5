"""The loop's real orchestrators with scripted activities under the real names, so the
orchestration logic (budgets, approvals, timers, retries, dead letters, continue-as-new) is
tested through the SDK's replay on the local host, apart from what the activities do."""

from __future__ import annotations

import threading
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import azure.durable_functions as df

from hartonomous.autonomy import loop, names
from hartonomous.autonomy import messages as m

bp = df.Blueprint()


@dataclass
class Script:
    """What the scripted activities answer; ``calls`` records every call by activity."""

    problems: list[dict[str, Any] | None] = field(default_factory=list)  # per iteration
    analyze_cost: float = 0.01
    plan_cost: float = 0.05
    needs_approval: bool = True
    approval_timeout_s: int = 3600
    approvals: dict[str, str] = field(default_factory=dict)  # approval id -> status
    act_failures: int = 0  # each act call fails while its action's count is below this
    on_action_failure: str = "continue"
    actions_per_plan: int = 1
    action_name: str = "learn_association"
    improved: bool = True
    refuse: str | None = None  # Baseline refuses every action with this reason
    learn_failures: int = 0  # each learn call fails while the calls are at most this
    on_act: Any = None  # called on each act (a test moves its clock)
    disallowed: set[int] = field(default_factory=set)  # plan indexes Approval skips (refused)
    baseline_cost: float = 0.0
    deciders: dict[str, str] = field(default_factory=dict)  # approval id -> who decided
    schedule_enabled: bool = True
    every_minutes: int = 15
    run_input: dict[str, Any] | None = None
    calls: dict[str, list[Any]] = field(default_factory=lambda: defaultdict(list))
    lock: threading.Lock = field(default_factory=threading.Lock)

    def log(self, name: str, data: Any) -> None:
        with self.lock:
            self.calls[name].append(data)

    def count(self, name: str) -> int:
        with self.lock:
            return len(self.calls[name])


SCRIPT = Script()


def reset() -> Script:
    global SCRIPT
    SCRIPT = Script()
    return SCRIPT


def problem(key: str) -> dict[str, Any]:
    return m.Problem("knowledge_gap", key, 1.0, key, {"query": key, "candidates": []}).to_json()


@bp.activity_trigger(input_name="data", activity=loop.ANALYZE)
def s_analyze(data: dict[str, Any]) -> dict[str, Any]:
    inp = m.AnalyzeIn.from_json(data)
    SCRIPT.log(loop.ANALYZE, inp)
    found = SCRIPT.problems[inp.iteration - 1] if inp.iteration <= len(SCRIPT.problems) else None
    chosen = m.Problem.from_json(found) if found else None
    return m.AnalyzeOut(chosen, int(found is not None), [], SCRIPT.analyze_cost).to_json()


@bp.activity_trigger(input_name="data", activity=loop.HYPOTHESIZE)
def s_hypothesize(data: dict[str, Any]) -> dict[str, Any]:
    inp = m.HypothesizeIn.from_json(data)
    SCRIPT.log(loop.HYPOTHESIZE, inp)
    actions = [
        m.PlannedAction(f"{inp.run_id}-{inp.iteration}-{i}", SCRIPT.action_name,
                        SCRIPT.needs_approval, 0.02)
        for i in range(SCRIPT.actions_per_plan)
    ]  # fmt: skip
    return m.HypothesizeOut(actions, [], "model", SCRIPT.plan_cost, 1.0).to_json()


@bp.activity_trigger(input_name="data", activity=loop.REQUEST_APPROVALS)
def s_request_approvals(data: dict[str, Any]) -> dict[str, Any]:
    inp = m.ApprovalIn.from_json(data)
    SCRIPT.log(loop.REQUEST_APPROVALS, inp)
    expires = datetime.fromisoformat(inp.requested_at) + timedelta(
        seconds=SCRIPT.approval_timeout_s
    )
    out = []
    for index, action_id in enumerate(inp.action_ids):
        if index in SCRIPT.disallowed:
            continue  # the policy disallows it now: refused, no request
        approval_id = f"approval-{action_id}"
        status = "pending" if SCRIPT.needs_approval else "approved"
        with SCRIPT.lock:
            status = SCRIPT.approvals.setdefault(approval_id, status)
        by = None if status == "pending" else "policy:test"
        out.append(m.ApprovalRequest(approval_id, action_id, status, by, expires.isoformat()))
    return m.ApprovalOut(out).to_json()


@bp.activity_trigger(input_name="data", activity=loop.SETTLE_APPROVAL)
def s_settle(data: dict[str, Any]) -> dict[str, Any]:
    inp = m.SettleIn.from_json(data)
    SCRIPT.log(loop.SETTLE_APPROVAL, inp)
    with SCRIPT.lock:
        status = SCRIPT.approvals[inp.approval_id]
        if inp.expire and status == "pending":
            status = SCRIPT.approvals[inp.approval_id] = "expired"
        by = "timer" if status == "expired" else SCRIPT.deciders.get(inp.approval_id, "key:x")
    return m.Decided(inp.approval_id, status, by).to_json()


@bp.activity_trigger(input_name="data", activity=loop.RECORD_PHASE)
def s_record_phase(data: dict[str, Any]) -> bool:
    SCRIPT.log(loop.RECORD_PHASE, m.PhaseIn.from_json(data))
    return True


@bp.activity_trigger(input_name="data", activity=loop.BASELINE)
def s_baseline(data: dict[str, Any]) -> dict[str, Any]:
    inp = m.ActIn.from_json(data)
    SCRIPT.log(loop.BASELINE, inp)
    if SCRIPT.refuse is not None:
        return m.Baseline(inp.action_id, None, 0.0, SCRIPT.refuse).to_json()
    return m.Baseline(inp.action_id, 0.5, SCRIPT.baseline_cost).to_json()


@bp.activity_trigger(input_name="data", activity=loop.ACT)
def s_act(data: dict[str, Any]) -> dict[str, Any]:
    inp = m.ActIn.from_json(data)
    SCRIPT.log(loop.ACT, inp)
    if SCRIPT.on_act is not None:
        SCRIPT.on_act()
    with SCRIPT.lock:
        attempts = sum(1 for c in SCRIPT.calls[loop.ACT] if c.action_id == inp.action_id)
    if attempts <= SCRIPT.act_failures:
        raise RuntimeError(f"{inp.action_id} attempt {attempts} failed")
    result: dict[str, Any] = {"done": inp.action_id}
    if SCRIPT.action_name == "retry_failed_workflow":
        result = {"instance_id": f"rerun-{inp.action_id}", "name": "s_child", "input": 7}
    return m.ActOut(inp.action_id, SCRIPT.action_name, True, result).to_json()


@bp.activity_trigger(input_name="data", activity=loop.DEAD_LETTER)
def s_dead_letter(data: dict[str, Any]) -> dict[str, Any]:
    inp = m.DeadLetterIn.from_json(data)
    SCRIPT.log(loop.DEAD_LETTER, inp)
    return m.DeadLetterOut(f"letter-{inp.action_id}", SCRIPT.on_action_failure).to_json()


@bp.activity_trigger(input_name="data", activity=loop.RESOLVE_DEAD_LETTER)
def s_resolve(data: dict[str, Any]) -> bool:
    SCRIPT.log(loop.RESOLVE_DEAD_LETTER, m.ResolveIn.from_json(data))
    return True


@bp.activity_trigger(input_name="data", activity=loop.LEARN)
def s_learn(data: dict[str, Any]) -> dict[str, Any]:
    inp = m.LearnIn.from_json(data)
    SCRIPT.log(loop.LEARN, inp)
    if SCRIPT.count(loop.LEARN) <= SCRIPT.learn_failures:
        raise RuntimeError(f"learn attempt {SCRIPT.count(loop.LEARN)} failed")
    status = "kept" if SCRIPT.improved else "reverted"
    outcomes = [
        m.Outcome(a, SCRIPT.action_name, 0.5, 0.9 if SCRIPT.improved else 0.5, SCRIPT.improved,
                  not SCRIPT.improved, status)
        for a in inp.action_ids
    ]  # fmt: skip
    return m.LearnOut(outcomes, 0.01 * len(outcomes)).to_json()


@bp.activity_trigger(input_name="data", activity=loop.FINISH)
def s_finish(data: dict[str, Any]) -> bool:
    SCRIPT.log(loop.FINISH, m.FinishIn.from_json(data))
    return True


@bp.activity_trigger(input_name="data", activity=loop.SCHEDULE_POLICY)
def s_schedule_policy(data: dict[str, Any]) -> dict[str, Any]:
    SCRIPT.log(loop.SCHEDULE_POLICY, data)
    return m.ScheduleOut(SCRIPT.schedule_enabled, SCRIPT.every_minutes).to_json()


@bp.activity_trigger(input_name="data", activity=loop.START_SCHEDULED)
def s_start_scheduled(data: dict[str, Any]) -> dict[str, Any]:
    SCRIPT.log(loop.START_SCHEDULED, data)
    if not SCRIPT.schedule_enabled:
        return m.Started(None, "disabled").to_json()
    run_input, SCRIPT.run_input = SCRIPT.run_input, None  # one run, then the slot is busy
    return m.Started(run_input, "started" if run_input else "active_run").to_json()


@bp.activity_trigger(input_name="value")
def s_child_step(value: int) -> int:
    SCRIPT.log("s_child_step", value)
    if value == 7:
        raise RuntimeError("the re-run workflow failed again")
    return value


@bp.orchestration_trigger(context_name="context", orchestration="s_child")
def s_child(context: df.DurableOrchestrationContext) -> Any:
    return (yield context.call_activity("s_child_step", context.get_input()))


@bp.orchestration_trigger(context_name="context", orchestration=names.RUN)
def autonomy_run(context: df.DurableOrchestrationContext) -> Any:
    return (yield from loop.run(context))


@bp.orchestration_trigger(context_name="context", orchestration=names.SCHEDULE)
def autonomy_schedule(context: df.DurableOrchestrationContext) -> Any:
    return (yield from loop.schedule(context))


@bp.orchestration_trigger(context_name="context", orchestration=names.RETRY_DEAD_LETTER)
def autonomy_retry_dead_letter(context: df.DurableOrchestrationContext) -> Any:
    return (yield from loop.retry_dead_letter(context))


def registry() -> Any:
    from hartonomous.workflows.registry import Registry

    app = df.DFApp()
    app.register_functions(bp)
    return Registry.from_functions(app.get_functions())
