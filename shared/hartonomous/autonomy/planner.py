"""Hypothesize: a plan of typed actions for the picked problem, validated before anything runs.

The model plans under JSON-schema constrained decoding (llama.cpp turns the schema into a
grammar): ``{"actions": [{"name", "parameters"}, ...]}`` where ``name`` ranges over the whole
registry (so a policy refusal is a real outcome) and the parameters of the action that
addresses the problem are narrowed to its evidence (the gap's query as a constant, the
candidate atoms as an enum, the found pairs, the failed instance, the repeated prompt).
Whatever comes back is then judged, in this order, each refusal recorded with its decider
and never executed: the registry (``registry:unknown_action``, ``registry:schema``), the
tenant's policy (the rule that disallows it), for the model's plan the evidence
(``planner:evidence``: the action must address the problem's kind and take its parameters from
the evidence, the grammar binds only a local model), the executor's ``check`` against the
tenant's data (``check:{action}``).

When the model's plan yields no usable action (output that is not JSON, every action
refused, the model unavailable), or the policy says ``planner: deterministic``, the
documented rules propose the obvious action, recorded ``planned_by: deterministic``:

- knowledge gap: ``learn_association`` of the query with the candidate that matched its words
  best (highest keyword score), else the top hybrid result;
- near-duplicates: ``mark_duplicates`` of the pairs found;
- failed workflow: ``retry_failed_workflow`` of that instance;
- repeated prompt: ``cache_answer`` of the prompt with its latest receipt;
- unclustered chunks: ``discover_concepts`` of that modality.

The model's tokens are metered to the usage ledger (key ``autonomy:{run}:{iteration}:
hypothesize``) and priced like any generation. Action ids are derived from the run, the
iteration and the plan's position, so a replayed activity adds nothing twice; a replay
returns the phase row's result. Audit ``full`` keeps the prompt and the raw output.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from hartonomous.autonomy.actions.base import ActionContext, ActionExecutor
from hartonomous.autonomy.loop import MAX_PLAN_TOKENS
from hartonomous.autonomy.messages import HypothesizeIn, HypothesizeOut, PlannedAction, Problem
from hartonomous.autonomy.policy import Policy
from hartonomous.autonomy.records import ActionRecord, PhaseRecord
from hartonomous.autonomy.registry import LOOP_ACTIONS, REGISTRY, parameter_errors
from hartonomous.autonomy.types import ActionStatus, Phase, ProblemKind
from hartonomous.errors import HartonomousError
from hartonomous.inference.types import Completion, CompletionRequest, ModelRef
from hartonomous.metering.ledger import Usage
from hartonomous.metering.pricing import price
from hartonomous.ports import Inference, UnitOfWorkFactory
from hartonomous.services.clock import utcnow

ACTION_IDS = uuid.UUID("6f1d2c4e-8a39-5b7e-9c0d-2e4f6a8b0c1d")  # uuid5 namespace of action ids
MAX_ACTIONS = 2  # a plan of more would not fit MAX_PLAN_TOKENS (a UUID is ~25 tokens)
HANDLES = "ABCDEFGHIJ"  # how the prompt names a gap's candidates
MAX_OUTPUT_CHARS = 64 * 1024  # a plan is at most MAX_PLAN_TOKENS; more is not parsed
# The prompt's pieces are cut to these, so its size is bounded by construction.
QUERY_CHARS = 200
SUMMARY_CHARS = 160
SNIPPET_CHARS = 160


@dataclass(frozen=True)
class Proposal:
    name: str
    parameters: Any


def action_id(run_id: str, iteration: int, planned_by: str, index: int) -> str:
    return str(uuid.uuid5(ACTION_IDS, f"{run_id}:{iteration}:{planned_by}:{index}"))


# -- the schema the model decodes under ---------------------------------------------------------


def choices(problem: Problem) -> dict[str, Any]:
    """The model's free choices for the problem's own action, by short handle.

    The model picks a candidate as ``"B"`` rather than copying a 36-character id: with
    Gemma 3 270M under the grammar a plan took 169 tokens with ids and 65 with handles (2.6
    times less model time, measured by the lead on this VM). The planner then expands the
    handles, and fills in what is fixed by the evidence (the gap's query, the failed instance),
    before the registry's own schema judges the result."""
    ev = problem.evidence
    kind = ProblemKind(problem.kind)
    if kind == ProblemKind.KNOWLEDGE_GAP:
        return {HANDLES[i]: c["atom_id"] for i, c in enumerate(ev["candidates"][: len(HANDLES)])}
    if kind == ProblemKind.NEAR_DUPLICATES:
        return {
            f"P{i + 1}": {"duplicate_id": p["duplicate_id"], "canonical_id": p["canonical_id"]}
            for i, p in enumerate(ev["pairs"])
        }
    return {}


def narrowed(name: str, problem: Problem) -> dict[str, Any]:
    """What the model decodes as the action's parameters: for the action that addresses the
    problem, its free choices as handles (nothing at all when the evidence fixes everything);
    for any other action, an empty object, which the registry's schema then refuses (the
    problem holds no evidence for it, so the model could only invent ids)."""
    empty: dict[str, Any] = {"type": "object", "properties": {}, "additionalProperties": False}
    if REGISTRY[name].addresses != ProblemKind(problem.kind):
        return empty
    handles = sorted(choices(problem))
    if name == "learn_association" and handles:
        return {**empty, "properties": {"answer": {"enum": handles}}, "required": ["answer"]}
    if name == "mark_duplicates" and handles:
        pairs = {"type": "array", "items": {"enum": handles}, "minItems": 1,
                 "maxItems": len(handles)}  # fmt: skip
        return {**empty, "properties": {"pairs": pairs}, "required": ["pairs"]}
    return empty


def expand(name: str, parameters: Any, problem: Problem) -> Any:
    """The registry's parameters from the model's handles and the problem's evidence.
    Anything not in the decoded shape passes through unchanged, for the registry's schema to
    judge (a scripted or remote model is not bound by our grammar)."""
    spec = REGISTRY.get(name)
    if spec is None or spec.addresses != ProblemKind(problem.kind):
        return parameters
    if not isinstance(parameters, dict):
        return parameters
    picks, ev = choices(problem), problem.evidence
    if name == "learn_association" and set(parameters) == {"answer"}:
        handle = parameters["answer"]
        atom = picks.get(handle) if isinstance(handle, str) else None
        return {"query": ev["query"], "atom_id": atom} if atom else parameters
    if name == "mark_duplicates" and set(parameters) == {"pairs"}:
        chosen = parameters["pairs"]
        if isinstance(chosen, list) and chosen and all(isinstance(h, str) and h in picks
                                                       for h in chosen):  # fmt: skip
            return {"pairs": [picks[h] for h in dict.fromkeys(chosen)]}
        return parameters
    if parameters:
        return parameters
    if name == "retry_failed_workflow":
        return {"instance_id": ev["instance_id"]}
    if name == "cache_answer":
        return {"prompt": ev["prompt"], "receipt_id": ev["receipt_id"]}
    if name == "discover_concepts":
        return {"modality": ev["modality"]}
    return parameters


def plan_schema(problem: Problem) -> dict[str, Any]:
    """``{"actions": [...]}``, one branch per registered action, the problem's own first."""
    first = {s.name for s in LOOP_ACTIONS.values() if s.addresses == ProblemKind(problem.kind)}
    order = sorted(LOOP_ACTIONS, key=lambda n: (n not in first, n))
    branches = [
        {
            "type": "object",
            "properties": {"name": {"const": n}, "parameters": narrowed(n, problem)},
            "required": ["name", "parameters"],
            "additionalProperties": False,
        }
        for n in order
    ]
    plan: dict[str, Any] = {
        "type": "object",
        "properties": {
            "actions": {
                "type": "array",
                "items": {"anyOf": branches},
                "minItems": 1,
                "maxItems": MAX_ACTIONS,
            }
        },
        "required": ["actions"],
        "additionalProperties": False,
    }
    return plan


def prompt_for(problem: Problem) -> str:
    """A document whose natural continuation is the plan (the built-in model is a base
    model): the actions, the problem, its evidence.

    Bounded by construction, whatever the evidence holds: the summary, the query and each
    candidate are cut (``SUMMARY_CHARS``, ``QUERY_CHARS``, ``SNIPPET_CHARS``; at most
    ``len(HANDLES)`` candidates, Analyze's ``PAIRS_PER_ACTION`` pairs), so the prompt stays
    within ``loop.PROMPT_TOKENS_ESTIMATE`` (a 2,000-character query once appeared twice)."""
    lines = ["Maintenance plan for a knowledge base. The actions that exist:"]
    for spec in LOOP_ACTIONS.values():
        lines.append(f"- {spec.name}: {spec.description}")
    ev = problem.evidence
    lines += ["", f"Problem ({problem.kind}): {problem.summary[:SUMMARY_CHARS]}."]
    if problem.kind == ProblemKind.KNOWLEDGE_GAP:
        lines.append(f"Query: {ev['query'][:QUERY_CHARS]}")
        lines.append("Candidate passages (the answer is the letter of the one that answers it):")
        lines += [f"- {h}: {c['text'][:SNIPPET_CHARS]}"
                  for h, c in zip(HANDLES, ev["candidates"], strict=False)]  # fmt: skip
    elif problem.kind == ProblemKind.NEAR_DUPLICATES:
        lines.append("Pairs (link them by name):")
        lines += [f"- P{i + 1}: chunk {p['duplicate_id']} duplicates {p['canonical_id']} "
                  f"(cosine {p['similarity']})"
                  for i, p in enumerate(ev["pairs"][: len(HANDLES)])]  # fmt: skip
    elif problem.kind == ProblemKind.FAILED_WORKFLOW:
        lines.append(f"Workflow {ev['name'][:100]} instance {ev['instance_id'][:100]}: "
                     f"{ev['error'][:200]}")  # fmt: skip
    elif problem.kind == ProblemKind.REPEATED_PROMPT:
        lines.append(f"Prompt: {ev['prompt'][:QUERY_CHARS]} (latest receipt {ev['receipt_id']})")
    elif problem.kind == ProblemKind.UNCLUSTERED_CHUNKS:
        lines.append(f"Modality {ev['modality']}: {ev['unclustered']} of {ev['chunks']} chunks "
                     "belong to no concept")  # fmt: skip
    fixes = [s.name for s in LOOP_ACTIONS.values() if s.addresses == ProblemKind(problem.kind)]
    lines += ["", f"The action for a {problem.kind} is {', '.join(fixes)}.",
              "The plan, as JSON, with the action that fixes the problem:", ""]  # fmt: skip
    return "\n".join(lines)


def parse_plan(text: str) -> list[Proposal]:
    """The proposals of the model's output; ValueError when it is not a plan (longer than
    ``MAX_OUTPUT_CHARS`` too: no plan is, and deep nesting would exhaust the parser)."""
    if len(text) > MAX_OUTPUT_CHARS:
        raise ValueError(f"the output is longer than {MAX_OUTPUT_CHARS} characters")
    try:
        data = json.loads(text)
    except RecursionError as exc:
        raise ValueError("the output nests too deep to be a plan") from exc
    actions = data.get("actions") if isinstance(data, dict) else None
    if not isinstance(actions, list):
        raise ValueError("the output has no list of actions")
    return [
        Proposal(str(a.get("name", ""))[:64], a.get("parameters"))
        if isinstance(a, dict)
        else Proposal("", a)
        for a in actions[:MAX_ACTIONS]
    ]


def off_evidence(name: str, parameters: dict[str, Any], problem: Problem) -> str | None:
    """Why a model's (schema-valid) action is not bound to the problem's evidence, or None.
    The grammar binds a local model only: a scripted or remote one could name any atom of the
    tenant, or an action for another problem with valid ids."""
    if REGISTRY[name].addresses != ProblemKind(problem.kind):
        return f"{name} does not address a {problem.kind}"
    ev = problem.evidence
    if name == "learn_association":
        atoms = {c["atom_id"] for c in ev.get("candidates", [])}
        if parameters.get("query") != ev.get("query") or parameters.get("atom_id") not in atoms:
            return "learn_association must pair the gap's query with one of its candidates"
    elif name == "mark_duplicates":
        found = [{"duplicate_id": p["duplicate_id"], "canonical_id": p["canonical_id"]}
                 for p in ev.get("pairs", [])]  # fmt: skip
        if any(pair not in found for pair in parameters.get("pairs", [])):
            return "mark_duplicates may only mark the pairs found"
    elif name == "retry_failed_workflow" and parameters.get("instance_id") != ev.get("instance_id"):
        return "retry_failed_workflow may only retry the failed instance"
    elif name == "cache_answer" and (parameters.get("prompt"), parameters.get("receipt_id")) != (
        ev.get("prompt"), ev.get("receipt_id"),
    ):  # fmt: skip
        return "cache_answer may only cache the repeated prompt with its receipt"
    elif name == "discover_concepts" and parameters.get("modality") != ev.get("modality"):
        return "discover_concepts may only cluster the modality found unclustered"
    return None


def deterministic(problem: Problem) -> list[Proposal]:
    ev = problem.evidence
    kind = ProblemKind(problem.kind)
    if kind == ProblemKind.KNOWLEDGE_GAP:
        candidates = ev["candidates"]
        if not candidates:
            return []
        worded = [c for c in candidates if c.get("keyword_score") is not None]
        best = max(worded, key=lambda c: c["keyword_score"]) if worded else candidates[0]
        return [Proposal("learn_association", {"query": ev["query"], "atom_id": best["atom_id"]})]
    if kind == ProblemKind.NEAR_DUPLICATES:
        pairs = [{"duplicate_id": p["duplicate_id"], "canonical_id": p["canonical_id"]}
                 for p in ev["pairs"]]  # fmt: skip
        return [Proposal("mark_duplicates", {"pairs": pairs})]
    if kind == ProblemKind.FAILED_WORKFLOW:
        return [Proposal("retry_failed_workflow", {"instance_id": ev["instance_id"]})]
    if kind == ProblemKind.UNCLUSTERED_CHUNKS:
        return [Proposal("discover_concepts", {"modality": ev["modality"]})]
    return [Proposal("cache_answer", {"prompt": ev["prompt"], "receipt_id": ev["receipt_id"]})]


# -- the planner -------------------------------------------------------------------------------


@dataclass
class Judged:
    record: ActionRecord
    usable: bool
    needs_approval: bool


@dataclass
class Planner:
    uow_factory: UnitOfWorkFactory
    policy: Callable[[str], Policy]
    executors: Callable[[], Mapping[str, ActionExecutor]]
    inference: Callable[[], Inference]
    model: Callable[[], ModelRef]
    clock: Callable[[], datetime] = utcnow
    max_tokens: int = MAX_PLAN_TOKENS

    def hypothesize(self, inp: HypothesizeIn) -> HypothesizeOut:
        started, began = self.clock(), time.perf_counter()
        with self.uow_factory(write=False, tenant_id=inp.tenant_id) as uow:
            done = uow.autonomy.phase(inp.tenant_id, inp.run_id, inp.iteration, Phase.HYPOTHESIZE)
        if done is not None and "result" in done.outputs:
            return HypothesizeOut.from_json(done.outputs["result"])
        policy = self.policy(inp.tenant_id)
        audit: dict[str, Any] = {}
        completion: Completion | None = None
        judged: list[Judged] = []
        if policy.planner == "model":
            completion, proposals = self._ask_model(inp.problem, audit)
            judged = self._judge(inp, policy, proposals, "model")
        planned_by = "model"
        if not any(j.usable for j in judged):
            planned_by = "deterministic"
            judged += self._judge(inp, policy, deterministic(inp.problem), "deterministic")
            if not any(j.usable for j in judged):
                planned_by = "none"
        usage: list[Usage] = []
        cost = 0.0
        if completion is not None:
            usage = [
                Usage("generation.prompt_tokens", completion.prompt_tokens, "tokens"),
                Usage("generation.completion_tokens", completion.completion_tokens, "tokens"),
            ]
            cost = price({u.kind: u.quantity for u in usage}).credits
        out = HypothesizeOut(
            actions=[
                PlannedAction(j.record.id, j.record.name, j.needs_approval,
                              REGISTRY[j.record.name].cost_credits)
                for j in judged if j.usable
            ],
            refused=[
                {"id": j.record.id, "name": j.record.name, "decider": j.record.decided_by or "",
                 "reason": j.record.error or ""}
                for j in judged if not j.usable
            ],
            planned_by=planned_by,
            cost_credits=cost,
            model_ms=round(completion.generation_ms, 3) if completion else 0.0,
        )  # fmt: skip
        outputs: dict[str, Any] = {"result": out.to_json()}
        if completion is not None:
            outputs["model"] = {"prompt_tokens": completion.prompt_tokens,
                                "completion_tokens": completion.completion_tokens,
                                "finish_reason": completion.finish_reason,
                                "model_ms": round(completion.generation_ms, 3)}  # fmt: skip
        if "error" in audit:
            outputs["model_error"] = audit["error"]
        if policy.audit_level == "full":
            outputs |= {k: v for k, v in audit.items() if k in ("prompt", "raw")}
            outputs["parameters"] = {j.record.id: j.record.parameters for j in judged}
        row = PhaseRecord(
            tenant_id=inp.tenant_id, run_id=inp.run_id, iteration=inp.iteration,
            phase=Phase.HYPOTHESIZE, status="completed",
            inputs={"problem": {"kind": inp.problem.kind, "key": inp.problem.key}},
            outputs=outputs, decision=f"{len(out.actions)} usable, {len(out.refused)} refused",
            decider=f"planner:{planned_by}", cost_credits=cost,
            duration_ms=(time.perf_counter() - began) * 1000, started_at=started,
            ended_at=self.clock(),
        )  # fmt: skip
        with self.uow_factory(write=True, tenant_id=inp.tenant_id) as uow:
            uow.autonomy.add_actions([j.record for j in judged])
            if usage:
                key = f"autonomy:{inp.run_id}:{inp.iteration}:hypothesize"
                uow.usage.record(inp.tenant_id, key, usage, started)
            uow.autonomy.record_phase(row)
            uow.commit()
        return out

    def _ask_model(
        self, problem: Problem, audit: dict[str, Any]
    ) -> tuple[Completion | None, list[Proposal]]:
        prompt = prompt_for(problem)
        audit["prompt"] = prompt
        request = CompletionRequest(
            prompt, max_tokens=self.max_tokens, temperature=0.0, json_schema=plan_schema(problem)
        )
        try:
            completion = self.inference().complete(self.model(), request)
        except HartonomousError as exc:  # unavailable, a prompt too long, a bad grammar
            audit["error"] = f"{type(exc).__name__}: {exc}"[:1000]
            return None, []
        audit["raw"] = completion.text
        try:
            proposals = parse_plan(completion.text)
            return completion, [Proposal(p.name, expand(p.name, p.parameters, problem))
                                for p in proposals]  # fmt: skip
        except Exception as exc:  # any output the model can produce falls back to the rules
            audit["error"] = f"unusable output: {type(exc).__name__}: {exc}"[:1000]
            return completion, []

    def _judge(
        self, inp: HypothesizeIn, policy: Policy, proposals: list[Proposal], planned_by: str
    ) -> list[Judged]:
        now = self.clock()
        out: list[Judged] = []
        seen: set[str] = set()
        for index, p in enumerate(proposals):
            fingerprint = json.dumps([p.name, p.parameters], sort_keys=True, default=str)
            if fingerprint in seen:
                continue
            seen.add(fingerprint)
            aid = action_id(inp.run_id, inp.iteration, planned_by, index)
            decider, error, needs_approval = self._verdict(inp, policy, p, aid, planned_by)
            spec = REGISTRY.get(p.name)
            params = p.parameters if isinstance(p.parameters, dict) else {"value": p.parameters}
            record = ActionRecord(
                id=aid,
                tenant_id=inp.tenant_id, run_id=inp.run_id, iteration=inp.iteration,
                name=p.name or "(none)", version=spec.version if spec else 0,
                parameters=params, planned_by=planned_by,
                status=ActionStatus.REFUSED if error else ActionStatus.PLANNED,
                decided_by=decider, result=None, outcome=None, error=error, attempts=0,
                created_at=now, updated_at=now, applied_at=None, reverted_at=None,
            )  # fmt: skip
            out.append(Judged(record, error is None, needs_approval))
        return out

    def _verdict(
        self, inp: HypothesizeIn, policy: Policy, p: Proposal, aid: str, planned_by: str
    ) -> tuple[str | None, str | None, bool]:
        """(decider, why refused or None, needs approval)."""
        if p.name not in REGISTRY:
            return "registry:unknown_action", f"unknown action {p.name!r}", False
        if p.name not in LOOP_ACTIONS:
            return "registry:not_for_loop", f"{p.name} is an agents' tool, not a loop action", False
        errors = parameter_errors(p.name, p.parameters)
        if errors:
            return "registry:schema", "; ".join(errors)[:4000], False
        decision = policy.decide(p.name)
        if not decision.allowed:
            return decision.rule, f"the policy disallows {p.name}", False
        unbound = off_evidence(p.name, p.parameters, inp.problem) if planned_by == "model" else None
        if unbound is not None:
            return "planner:evidence", unbound, False
        executor = self.executors().get(p.name)
        if executor is None:
            return "registry:no_executor", f"no executor for {p.name}", False
        ctx = ActionContext(inp.tenant_id, inp.run_id, aid, dict(p.parameters))
        try:
            executor.check(ctx)
        except HartonomousError as exc:
            return f"check:{p.name}", str(exc)[:4000], False
        return None, None, decision.needs_approval
