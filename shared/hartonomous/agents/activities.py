"""An agent run's activities: think (retrieve, the model's step, the governor's verdict), the
approval request and its settling, the tool call at the point of execution, and the end.

Each is idempotent: step rows, violations and approvals are keyed by (run, step, kind) and
their ids derived from it; a receipt's id is derived from the run and the step, so a
re-executed think finds the model's recorded output instead of asking the model again; a
step's cost is added to the run's spend in the transaction that adds the step row, once.
The governor judges from the compiled agent and the tenant's policy as stored now, at think
and again right before a tool runs (a policy changed in between is obeyed).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from hartonomous.agents import messages as m
from hartonomous.agents.compiled import CompiledAgent
from hartonomous.agents.constitution import Governor, Violation
from hartonomous.agents.names import PROMPT_TOKENS_ESTIMATE
from hartonomous.agents.prompting import (
    Proposal,
    Source,
    observation,
    parse,
    prompt_for,
    step_schema,
)
from hartonomous.agents.receipts import run_receipt
from hartonomous.agents.records import (
    AgentApprovalRecord,
    AgentRunRecord,
    StepRecord,
    ViolationRecord,
)
from hartonomous.agents.scope import effective, scope_filter
from hartonomous.agents.tools import AgentTools, ToolContext, ToolError
from hartonomous.agents.types import RunStatus, StepKind, StepStatus, ViolationOutcome
from hartonomous.autonomy.policy import Policy
from hartonomous.autonomy.types import ApprovalStatus
from hartonomous.errors import NotFound
from hartonomous.generation.prompting import CHARS_PER_TOKEN, Assembled
from hartonomous.generation.service import GenerateRequest, GenerationService, Outcome
from hartonomous.inference.types import BUILTIN_MODEL, Completion, CompletionRequest, ModelRef
from hartonomous.knowledge.search import Mode, SearchResult, SearchService
from hartonomous.knowledge.store import SearchFilter
from hartonomous.metering.pricing import price
from hartonomous.ports import Inference, UnitOfWorkFactory
from hartonomous.services.atoms import AtomService
from hartonomous.services.clock import utcnow

if TYPE_CHECKING:
    from hartonomous.agents.store import AgentRepository

IDS = uuid.UUID("2b7e51c4-93a0-5f6d-8c21-7d4e9f0a1b3c")  # uuid5 namespace of a run's ids
RETRIEVE_K = 3  # passages retrieved for the task at every step
RAW_CHARS = 4000  # of the model's output kept on the step row (the output atom has it whole)
SEARCH_CREDITS = price({"search.queries": 1}).credits


def derived_id(kind: str, of: str) -> str:
    return str(uuid.uuid5(IDS, f"{kind}:{of}"))


def step_id(run_id: str, step: int, kind: StepKind) -> str:
    return derived_id(f"step-{kind.value}", f"{run_id}:{step}")


@dataclass
class AgentActivities:
    uow_factory: UnitOfWorkFactory
    atoms: AtomService
    generation: GenerationService
    search: Callable[[], SearchService]  # built lazily: the embedder loads on first use
    inference: Callable[[], Inference]
    tools: AgentTools
    policy: Callable[[str], Policy]
    clock: Callable[[], datetime] = utcnow

    # -- reading a run -------------------------------------------------------------------------

    def _load(self, tenant_id: str, run_id: str) -> tuple[AgentRunRecord, CompiledAgent]:
        with self.uow_factory(write=False, tenant_id=tenant_id) as uow:
            run = uow.agents.run(tenant_id, run_id)
            version = uow.agents.version(tenant_id, run.version_id) if run else None
        if run is None or version is None:
            raise NotFound(f"no agent run {run_id!r}")
        return run, CompiledAgent.from_json(version.spec)

    # -- think ---------------------------------------------------------------------------------

    def think(self, data: dict[str, Any]) -> dict[str, Any]:
        """Retrieve in the frozen scope, ask the model for the next step under the step
        schema, record its receipt, and judge the step; returns the verdict."""
        inp = m.ThinkIn.from_json(data)
        run, agent = self._load(inp.tenant_id, inp.run_id)
        if run.status != RunStatus.RUNNING:
            return m.ThinkOut("ended", None, 0.0, detail=run.status).to_json()
        with self.uow_factory(write=False, tenant_id=inp.tenant_id) as uow:
            steps = uow.agents.steps(inp.tenant_id, inp.run_id)
        done = _replayed(steps, inp.step)
        if done is not None:  # this think committed before: its verdict, not a second one
            return done.to_json()
        started = time.perf_counter()
        scope = scope_filter(agent)
        with self.uow_factory(write=False, tenant_id=inp.tenant_id) as uow:
            now_scope = effective(uow, inp.tenant_id, scope)
        hits = self.search().search(
            tenant_id=inp.tenant_id, query=run.input_text, k=RETRIEVE_K, mode=Mode.HYBRID,
            flt=now_scope, request_id=f"agent:{run.id}:{inp.step}:retrieve", record_gaps=False,
        )  # fmt: skip
        searched = time.perf_counter()
        sources, history = _context(hits, steps)
        # The prompt stays within what the budget's step estimate assumed, and the context.
        room = min(self.generation.context_tokens - agent.max_tokens_per_step,
                   PROMPT_TOKENS_ESTIMATE)  # fmt: skip
        budget = room * CHARS_PER_TOKEN
        prompt, sources = prompt_for(agent, run.input_text, sources, history, budget)
        handles = {s.handle: s.atom_id for s in sources}
        request = CompletionRequest(
            prompt=prompt,
            max_tokens=agent.max_tokens_per_step, temperature=agent.temperature, stop=(),
            json_schema=step_schema(agent, list(handles)), seed=run.seed,
        )  # fmt: skip
        receipt_id = derived_id("receipt", f"{run.id}:{inp.step}")
        owner = None if agent.model.id == BUILTIN_MODEL else inp.tenant_id  # a platform model
        model = ModelRef(agent.model.id, agent.model.sha256, agent.model.name, owner)
        completion, output_atom = self._generate(
            inp.tenant_id, receipt_id, model, request, run, agent, scope, sources, inp.step,
            searched - started,
        )  # fmt: skip
        tokens = {"generation.prompt_tokens": completion.prompt_tokens,
                  "generation.completion_tokens": completion.completion_tokens}  # fmt: skip
        cost = round(price(tokens).credits + SEARCH_CREDITS, 6)
        proposal = parse(completion.text, handles, agent)
        return self._judge(
            inp, run, agent, proposal, cost, receipt_id, output_atom, completion.text,
            [s.atom_id for s in sources],
        ).to_json()  # fmt: skip

    def _generate(
        self, tenant_id: str, receipt_id: str, model: ModelRef, request: CompletionRequest,
        run: AgentRunRecord, agent: CompiledAgent, scope: SearchFilter, sources: list[Source],
        step: int, search_s: float,
    ) -> tuple[Completion, str]:  # fmt: skip
        """The model's output and its output atom: recorded once under ``receipt_id`` (a
        re-executed think reads the recorded one back instead of asking again)."""
        with self.uow_factory(write=False, tenant_id=tenant_id) as uow:
            recorded = uow.receipts.get(tenant_id, receipt_id)
            atom = uow.atoms.get(tenant_id, recorded.output_atom_id) if recorded else None
        if recorded is not None and atom is not None:
            text = b"".join(self.atoms.read(atom)).decode("utf-8")
            return Completion(text, "stop", recorded.prompt_tokens,
                              recorded.completion_tokens), atom.id  # fmt: skip
        completion = self.inference().complete(model, request)
        used = [
            SearchResult(atom_id=s.atom_id, score=0.0, rank=i, text=s.text, document_id=None,
                         ordinal=None, start=None, end=None, highlights=[])
            for i, s in enumerate(sources, start=1)
        ]  # fmt: skip
        asked = GenerateRequest(
            prompt=run.input_text, model_id=model.id, k=RETRIEVE_K, filters=scope,
            max_tokens=request.max_tokens, temperature=request.temperature, stop=(),
            seed=request.seed,
        )  # fmt: skip
        timings = {
            "search_ms": round(search_s * 1000, 3),
            "prompt_ms": round(completion.prompt_ms, 3),
            "generation_ms": round(completion.generation_ms, 3),
            "total_ms": round(search_s * 1000 + completion.generation_ms, 3),
        }
        extra = {"agent": {"name": agent.name, "version_id": run.version_id, "run_id": run.id,
                           "step": step}}  # fmt: skip
        body = self.generation.record(
            Outcome(receipt_id, tenant_id, asked, model, Assembled(request.prompt, used, 0),
                    completion, timings, extra=extra)
        )  # fmt: skip
        output = next(c for c in body["components"] if c["role"] == "output")
        return completion, str(output["atom_id"])

    def _judge(
        self, inp: m.ThinkIn, run: AgentRunRecord, agent: CompiledAgent, proposal: Proposal,
        cost: float, receipt_id: str, output_atom: str, raw: str, sources: list[str],
    ) -> m.ThinkOut:  # fmt: skip
        """The governor's verdict, written with the step rows and violations at once."""
        gov, policy, now = Governor(agent), self.policy(inp.tenant_id), self.clock()
        model_id = step_id(run.id, inp.step, StepKind.MODEL)
        result: dict[str, Any] = {"output_atom_id": output_atom, "raw": raw[:RAW_CHARS],
                                  "sources": sources}  # fmt: skip
        tool_row: StepRecord | None = None
        violations: list[Violation] = []
        if proposal.invalid is not None:
            status, out = StepStatus.INVALID, m.ThinkOut("invalid", model_id, cost,
                                                          proposal.invalid)  # fmt: skip
            result["invalid"] = proposal.invalid
        elif proposal.answer is not None:
            result |= {"answer": proposal.answer, "citations": list(proposal.citations)}
            violations = gov.answer(proposal.answer, list(proposal.citations), sources)
            ends = [v for v in violations if v.outcome == ViolationOutcome.END]
            if ends:
                status, out = StepStatus.VIOLATED, m.ThinkOut("violated", model_id, cost,
                                                               ends[0].detail)  # fmt: skip
            elif violations:
                status = StepStatus.AWAITING_APPROVAL
                out = m.ThinkOut("approval", model_id, cost, violations[0].rule, about="answer")
            else:
                status, out = StepStatus.ANSWERED, m.ThinkOut("answered", model_id, cost)
        else:
            assert proposal.tool is not None
            status = StepStatus.CHOSE_TOOL
            verdict = gov.tool_call(proposal.tool, proposal.arguments, policy)
            tool_id = step_id(run.id, inp.step, StepKind.TOOL)
            if verdict.violation is not None:
                violations = [verdict.violation]
                tool_status = StepStatus.REFUSED
                out = m.ThinkOut("violated", tool_id, cost, verdict.violation.detail)
            elif verdict.invalid is not None:
                tool_status = StepStatus.REFUSED
                out = m.ThinkOut("refused", tool_id, cost, verdict.invalid)
            elif verdict.needs_approval:
                tool_status = StepStatus.AWAITING_APPROVAL
                out = m.ThinkOut("approval", tool_id, cost, verdict.decided_by[:200], about="tool")
            else:
                tool_status = StepStatus.APPROVED
                out = m.ThinkOut("run", tool_id, cost)
            arguments = proposal.arguments if isinstance(proposal.arguments, dict) else {
                "value": proposal.arguments}  # fmt: skip
            tool_row = StepRecord(
                id=tool_id, tenant_id=inp.tenant_id, run_id=run.id, step=inp.step,
                kind=StepKind.TOOL, name=proposal.tool, arguments=arguments, status=tool_status,
                decided_by=verdict.decided_by[:100], receipt_id=None,
                result={"detail": out.detail, "deciders": verdict.approvers or None},
                cost_credits=0.0,
                started_at=now, ended_at=None if tool_status == StepStatus.APPROVED else now,
            )  # fmt: skip
        result["violations"] = [v.rule for v in violations]
        model_row = StepRecord(
            id=model_id, tenant_id=inp.tenant_id, run_id=run.id, step=inp.step,
            kind=StepKind.MODEL, name=None, arguments=None, status=status,
            decided_by=violations[0].rule if violations else None, receipt_id=receipt_id,
            result=result, cost_credits=cost, started_at=now, ended_at=now,
        )  # fmt: skip
        with self.uow_factory(write=True, tenant_id=inp.tenant_id) as uow:
            repo = uow.agents
            if repo.add_step(model_row):
                repo.add_cost(inp.tenant_id, run.id, cost, steps=inp.step)
                if tool_row is not None:
                    repo.add_step(tool_row)
                _violate(repo, inp.tenant_id, run.id, inp.step, violations, now)
            uow.commit()
        return out

    # -- approvals -----------------------------------------------------------------------------

    def request_approval(self, data: dict[str, Any]) -> dict[str, Any]:
        """A pending approval of the step (one per step), expiring after the policy's
        approval timeout; an ended run gets none (expired at once)."""
        inp = m.ApprovalIn.from_json(data)
        now = self.clock()
        timeout = self.policy(inp.tenant_id).approval_timeout_s
        with self.uow_factory(write=True, tenant_id=inp.tenant_id) as uow:
            repo = uow.agents
            run = repo.run(inp.tenant_id, inp.run_id)
            if run is None or run.status != RunStatus.RUNNING:
                return m.ApprovalOut("", ApprovalStatus.EXPIRED, now.isoformat(),
                                     "run-ended").to_json()  # fmt: skip
            approval = repo.add_approval(
                AgentApprovalRecord(
                    id=derived_id("approval", inp.step_id), tenant_id=inp.tenant_id,
                    run_id=inp.run_id, step_id=inp.step_id, instance_id=inp.instance_id,
                    reason=inp.reason[:200], status=ApprovalStatus.PENDING, requested_at=now,
                    expires_at=now + timedelta(seconds=timeout), decided_at=None,
                    decided_by=None, note=None,
                )
            )  # fmt: skip
            uow.commit()
        return m.ApprovalOut(approval.id, approval.status, approval.expires_at.isoformat(),
                             approval.decided_by).to_json()  # fmt: skip

    def settle_approval(self, data: dict[str, Any]) -> dict[str, Any]:
        """The approval as stored; past its deadline a pending one expires now, with its
        step (compare-and-set: a decision that got there first stands)."""
        inp = m.SettleIn.from_json(data)
        now = self.clock()
        with self.uow_factory(write=True, tenant_id=inp.tenant_id) as uow:
            repo = uow.agents
            approval = repo.approval(inp.tenant_id, inp.approval_id)
            if approval is None:
                raise NotFound(f"no approval {inp.approval_id!r}")
            if inp.expire and repo.decide(
                inp.tenant_id, inp.approval_id, ApprovalStatus.EXPIRED, "timer", now
            ):
                repo.update_step(inp.tenant_id, approval.step_id, [StepStatus.AWAITING_APPROVAL],
                                 status=StepStatus.EXPIRED, decided_by="timer",
                                 ended_at=now)  # fmt: skip
                approval = repo.approval(inp.tenant_id, inp.approval_id)
                assert approval is not None
            uow.commit()
        return m.Settled(approval.status, approval.decided_by).to_json()

    # -- the tool ------------------------------------------------------------------------------

    def tool(self, data: dict[str, Any]) -> dict[str, Any]:
        """Run an approved tool call, judged once more at the point of execution."""
        inp = m.ToolIn.from_json(data)
        run, agent = self._load(inp.tenant_id, inp.run_id)
        with self.uow_factory(write=False, tenant_id=inp.tenant_id) as uow:
            step = uow.agents.step(inp.tenant_id, inp.step_id)
        if (
            step is None
            or step.kind != StepKind.TOOL
            or step.name is None
            or (step.run_id != run.id)
        ):
            raise NotFound(f"no tool step {inp.step_id!r} in run {inp.run_id!r}")
        if step.status in (StepStatus.EXECUTED, StepStatus.FAILED):  # a replay: done once
            detail = (step.result or {}).get("detail")
            return m.ToolOut(step.status, step.cost_credits, detail).to_json()
        if run.status != RunStatus.RUNNING:
            return m.ToolOut("ended", 0.0, run.status).to_json()
        if step.status not in (StepStatus.APPROVED, StepStatus.EXECUTING):
            # never run what no rule or human approved
            return m.ToolOut("refused", 0.0, f"the step is {step.status}").to_json()
        verdict = Governor(agent).tool_call(step.name, step.arguments, self.policy(run.tenant_id))
        now = self.clock()
        if verdict.violation is not None or (verdict.needs_approval and not _human(step)):
            return self._refuse_now(run, step, verdict.violation, verdict.decided_by, now)
        with self.uow_factory(write=True, tenant_id=run.tenant_id) as uow:
            claimed = uow.agents.claim_tool(run.tenant_id, run.id, step.id)
            uow.commit()
        if not claimed:  # the run ended (a cancel) since it was read: nothing runs
            return m.ToolOut("ended", 0.0, RunStatus.CANCELLED).to_json()
        ctx = ToolContext(run.tenant_id, run.id, step.step, agent.name, scope_filter(agent))
        try:
            done = self.tools.run(ctx, step.name, dict(step.arguments or {}))
            status, result, cost = StepStatus.EXECUTED, done.to_json(), done.cost_credits
        except ToolError as exc:
            status, result, cost = StepStatus.FAILED, {"detail": exc.detail}, 0.0
        with self.uow_factory(write=True, tenant_id=run.tenant_id) as uow:
            if uow.agents.update_step(run.tenant_id, step.id, [StepStatus.EXECUTING],
                                      status=status, result=result, cost_credits=cost,
                                      ended_at=self.clock()):  # fmt: skip
                uow.agents.add_cost(run.tenant_id, run.id, cost)
            uow.commit()
        return m.ToolOut(status, cost, result.get("detail")).to_json()

    def _refuse_now(
        self, run: AgentRunRecord, step: StepRecord, violation: Violation | None, by: str,
        now: datetime,
    ) -> dict[str, Any]:  # fmt: skip
        """The policy changed since think: a forbidden call is a violation; one that now
        needs a human goes back to awaiting approval."""
        with self.uow_factory(write=True, tenant_id=run.tenant_id) as uow:
            repo = uow.agents
            if violation is not None:
                repo.update_step(run.tenant_id, step.id, [StepStatus.APPROVED],
                                 status=StepStatus.REFUSED, decided_by=violation.rule,
                                 ended_at=now)  # fmt: skip
                _violate(repo, run.tenant_id, run.id, step.step, [violation], now)
            else:
                repo.update_step(run.tenant_id, step.id, [StepStatus.APPROVED],
                                 status=StepStatus.AWAITING_APPROVAL,
                                 decided_by=by[:100])  # fmt: skip
            uow.commit()
        if violation is not None:
            return m.ToolOut("violated", 0.0, violation.detail).to_json()
        return m.ToolOut("approval", 0.0, by).to_json()

    # -- the end -------------------------------------------------------------------------------

    def finish(self, data: dict[str, Any]) -> dict[str, Any]:
        """End the run (compare-and-set: a cancel that came first wins), release its answer,
        record a cap a constitution rule set as a violation, and store its receipt."""
        inp = m.FinishIn.from_json(data)
        run, agent = self._load(inp.tenant_id, inp.run_id)
        now = self.clock()
        gov = Governor(agent)
        with self.uow_factory(write=True, tenant_id=inp.tenant_id) as uow:
            repo = uow.agents
            values: dict[str, Any] = {"error": inp.error[:2000] if inp.error else None}
            status = RunStatus(inp.status)
            if inp.answer_step_id is not None:
                step = repo.step(inp.tenant_id, inp.answer_step_id)
                result = step.result or {} if step else {}
                values |= {"answer": result.get("answer"),
                           "answer_atom_id": result.get("output_atom_id")}  # fmt: skip
                if step is not None and step.status == StepStatus.APPROVED:
                    repo.update_step(inp.tenant_id, step.id, [StepStatus.APPROVED],
                                     status=StepStatus.ANSWERED)  # fmt: skip
            cap = {RunStatus.BUDGET_EXHAUSTED: "max_credits",
                   RunStatus.STEPS_EXHAUSTED: "max_steps"}.get(status)  # fmt: skip
            if cap and gov.cap_rule(cap).startswith("constitution"):
                limit = gov.credit_cap if cap == "max_credits" else gov.step_cap
                _violate(repo, inp.tenant_id, run.id, run.steps + 1,
                         [Violation(gov.cap_rule(cap), f"the run reached its cap of {limit}",
                                    ViolationOutcome.END)], now)  # fmt: skip
            if repo.end_run(inp.tenant_id, run.id, status, now, **values):
                ended = repo.run(inp.tenant_id, run.id)
                assert ended is not None
                repo.update_run(inp.tenant_id, run.id, receipt=run_receipt(uow, ended))
            final = repo.run(inp.tenant_id, run.id)
            uow.commit()
        assert final is not None
        return m.FinishOut(final.status).to_json()


def _human(step: StepRecord) -> bool:
    """Was the step approved by a person (an admin's key), not by a rule?"""
    return (step.decided_by or "").startswith("key:")


def _violate(
    repo: AgentRepository, tenant_id: str, run_id: str, step: int,
    violations: list[Violation], at: datetime,
) -> None:  # fmt: skip
    for v in violations:
        repo.add_violation(
            ViolationRecord(tenant_id, run_id, step, v.rule[:64], v.detail[:2000], v.outcome, at)
        )


def _context(hits: list[SearchResult], steps: list[StepRecord]) -> tuple[list[Source], list[str]]:
    """The run's sources by handle (retrieval first, then what tools surfaced, in order) and
    the history lines of earlier steps."""
    sources: dict[str, Source] = {}

    def add(atom_id: str, text: str) -> str:
        if atom_id not in sources:
            sources[atom_id] = Source(f"S{len(sources) + 1}", atom_id, text)
        return sources[atom_id].handle

    for hit in hits:
        add(hit.atom_id, hit.text)
    history: list[str] = []
    for s in steps:
        if s.kind == StepKind.MODEL and s.status == StepStatus.INVALID:
            history.append(
                f"- (your output was not a valid step: {(s.result or {}).get('invalid')})"
            )
        elif s.kind == StepKind.TOOL and s.name is not None:
            result = s.result or {}
            found = [add(p["atom_id"], p["text"]) for p in result.get("passages", [])]
            history.append(observation(s.name, s.arguments, s.status, result.get("detail"), found))
    return list(sources.values()), history


def _replayed(steps: list[StepRecord], n: int) -> m.ThinkOut | None:
    """The verdict a committed think gave for step ``n``, rebuilt from its rows."""
    model = next((s for s in steps if s.step == n and s.kind == StepKind.MODEL), None)
    if model is None:
        return None
    tool = next((s for s in steps if s.step == n and s.kind == StepKind.TOOL), None)
    cost, detail = model.cost_credits, (model.result or {}).get("invalid")
    by_status = {
        StepStatus.INVALID: m.ThinkOut("invalid", model.id, cost, detail),
        StepStatus.VIOLATED: m.ThinkOut("violated", model.id, cost, model.decided_by),
        StepStatus.AWAITING_APPROVAL: m.ThinkOut("approval", model.id, cost, model.decided_by,
                                                 about="answer"),
        StepStatus.APPROVED: m.ThinkOut("approval", model.id, cost, model.decided_by,
                                        about="answer"),
        StepStatus.ANSWERED: m.ThinkOut("answered", model.id, cost),
    }  # fmt: skip
    if model.status in by_status:
        return by_status[StepStatus(model.status)]
    if tool is None:
        return None
    if tool.status == StepStatus.REFUSED:
        verdict = "violated" if (tool.decided_by or "") != "registry:schema" else "refused"
        return m.ThinkOut(verdict, tool.id, cost, (tool.result or {}).get("detail"))
    if tool.status == StepStatus.AWAITING_APPROVAL:
        return m.ThinkOut("approval", tool.id, cost, tool.decided_by, about="tool")
    return m.ThinkOut("run", tool.id, cost)
