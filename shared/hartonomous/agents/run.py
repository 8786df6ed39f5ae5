"""An agent run's orchestration: think, judge, (approval), tool, ... until an answer, a
violation, a cap or a cancel.

Rules the code keeps (docs/agents.md states them for users):

- Before each step the orchestrator checks, deterministically, that the step's estimate
  (``names.step_credits``) still fits the credit cap (``budget_exhausted`` otherwise) and
  that the run's time, less the time spent waiting for humans, is under ``max_duration_s``
  (``duration_exhausted``). After ``max_steps`` steps without an answer: ``steps_exhausted``.
- Think records the model's step and the governor's verdict; the orchestrator only follows
  it. A tool call runs only when the verdict says ``run`` or a human approved it; the tool
  activity judges it once more at the point of execution (a policy changed since think is
  obeyed: a forbidden call ends the run, one that now needs a human waits for one).
- Approvals are the loop's: a pending request waits for the ``approval-<id>`` external event
  raced against a timer (at most 6 days per timer, in a loop, until the request's expiry),
  and the store's answer wins: an event only wakes the run. A rejected or expired tool call
  is told to the model, and the run goes on; a rejected answer ends the run ``violated``.
- A bug, or a step still failing after its retries (the model unavailable), ends the run
  ``failed`` with the error.
"""

from __future__ import annotations

from collections.abc import Generator
from datetime import datetime
from typing import Any

import azure.durable_functions as df

from hartonomous.agents import messages as m
from hartonomous.agents import names
from hartonomous.agents.names import RunInput
from hartonomous.agents.types import RunStatus
from hartonomous.autonomy.approval_wait import decision
from hartonomous.autonomy.types import ApprovalStatus
from hartonomous.workflows.actions import BackoffRetryOptions

STEP_ATTEMPTS = 3  # think and tool: the model or the store briefly unavailable

Orchestration = Generator[Any, Any, Any]


class _Stop(Exception):
    def __init__(self, status: RunStatus, answer_step: str | None = None) -> None:
        super().__init__(status.value)
        self.status = status
        self.answer_step = answer_step


class _Run:
    def __init__(self, context: df.DurableOrchestrationContext, inp: RunInput) -> None:
        self.context = context
        self.inp = inp
        self.spent = 0.0
        self.waited = 0.0
        self.started = datetime.fromisoformat(inp.started_at)
        self.retry = BackoffRetryOptions(inp.retry_first_ms, STEP_ATTEMPTS, backoff_coefficient=2.0)

    @property
    def now(self) -> datetime:
        return self.context.current_utc_datetime  # type: ignore[no-any-return]

    def show(self, step: int, phase: str) -> None:
        self.context.set_custom_status(
            {"run_id": self.inp.run_id, "step": step, "phase": phase,
             "spent_credits": round(self.spent, 6)}
        )  # fmt: skip

    def gate(self, estimate: float) -> None:
        if self.spent + estimate > self.inp.budget_credits:
            raise _Stop(RunStatus.BUDGET_EXHAUSTED)
        if (self.now - self.started).total_seconds() - self.waited >= self.inp.max_duration_s:
            raise _Stop(RunStatus.DURATION_EXHAUSTED)

    def steps(self) -> Orchestration:
        inp = self.inp
        for step in range(1, inp.max_steps + 1):
            self.gate(inp.step_credits)
            self.show(step, "think")
            thought = m.ThinkOut.from_json(
                (yield self.context.call_activity_with_retry(
                    names.THINK, self.retry, m.ThinkIn(inp.tenant_id, inp.run_id, step).to_json()))
            )  # fmt: skip
            self.spent += thought.cost_credits
            verdict = thought.verdict
            if verdict == "ended":
                raise _Stop(RunStatus(thought.detail or RunStatus.CANCELLED))
            if verdict == "answered":
                raise _Stop(RunStatus.ANSWERED, thought.step_id)
            if verdict == "violated":
                raise _Stop(RunStatus.VIOLATED)
            if verdict == "approval":
                assert thought.step_id is not None
                status = yield from self.approval(step, thought.step_id, thought.detail or "")
                if thought.about == "answer":
                    if status == ApprovalStatus.APPROVED:
                        raise _Stop(RunStatus.ANSWERED, thought.step_id)
                    raise _Stop(RunStatus.VIOLATED)
                if status == ApprovalStatus.APPROVED:
                    yield from self.tool(step, thought.step_id)
            elif verdict == "run":
                assert thought.step_id is not None
                yield from self.tool(step, thought.step_id)
            # "invalid" and "refused": the next step's prompt tells the model
        raise _Stop(RunStatus.STEPS_EXHAUSTED)

    def tool(self, step: int, step_id: str) -> Orchestration:
        inp = self.inp
        while True:
            self.show(step, "tool")
            out = m.ToolOut.from_json(
                (yield self.context.call_activity_with_retry(
                    names.TOOL, self.retry, m.ToolIn(inp.tenant_id, inp.run_id, step_id).to_json()))
            )  # fmt: skip
            self.spent += out.cost_credits
            if out.status == "ended":
                raise _Stop(RunStatus(out.detail or RunStatus.CANCELLED))
            if out.status == "violated":
                raise _Stop(RunStatus.VIOLATED)
            if out.status != "approval":
                return out
            # The policy now asks for a human (it changed since think).
            status = yield from self.approval(step, step_id, out.detail or "")
            if status != ApprovalStatus.APPROVED:
                return out

    def approval(self, step: int, step_id: str, reason: str) -> Orchestration:
        ctx, inp = self.context, self.inp
        self.show(step, "approval")
        requested = m.ApprovalOut.from_json(
            (yield ctx.call_activity(
                names.REQUEST_APPROVAL,
                m.ApprovalIn(inp.tenant_id, inp.run_id, step_id, ctx.instance_id,
                             reason).to_json()))
        )  # fmt: skip
        if requested.status != ApprovalStatus.PENDING:
            return requested.status
        waiting_from = self.now
        status = yield from self.wait(requested)
        self.waited += (self.now - waiting_from).total_seconds()
        return status

    def wait(self, request: m.ApprovalOut) -> Orchestration:
        """The decision or the expiry, as the store has it (``approval_wait``)."""
        ctx, tenant = self.context, self.inp.tenant_id

        def settle(expire: bool) -> Any:
            settle_in = m.SettleIn(tenant, request.approval_id, expire)
            return ctx.call_activity(names.SETTLE_APPROVAL, settle_in.to_json())

        deadline = datetime.fromisoformat(request.expires_at)
        settled = yield from decision(ctx, request.approval_id, deadline, settle)
        return m.Settled.from_json(settled).status


def run(context: df.DurableOrchestrationContext) -> Orchestration:
    """``names.RUN``: the whole run in one execution (max_steps is at most 50)."""
    inp = RunInput.from_json(context.get_input())
    state = _Run(context, inp)
    try:
        try:
            yield from state.steps()
            raise AssertionError("steps() always stops")  # pragma: no cover
        except _Stop as stop:
            status, answer_step = stop.status, stop.answer_step
    except Exception as exc:
        yield context.call_activity(
            names.FINISH,
            m.FinishIn(inp.tenant_id, inp.run_id, RunStatus.FAILED, round(state.spent, 6),
                       error=str(exc)[:2000]).to_json(),
        )  # fmt: skip
        raise
    finished = m.FinishOut.from_json(
        (yield context.call_activity(
            names.FINISH,
            m.FinishIn(inp.tenant_id, inp.run_id, status, round(state.spent, 6),
                       answer_step_id=answer_step).to_json()))
    )  # fmt: skip
    return {"run_id": inp.run_id, "status": finished.status, "spent_credits": round(state.spent, 6)}
