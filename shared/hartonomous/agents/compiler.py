"""Compile an agent spec into its immutable, content-addressed form (``CompiledAgent``).

Pure: the caller resolves the model (its SHA-256), reads the tenant's knowledge watermark
and policy; this checks every part against them and the registry and returns the compiled
agent, or raises 422 naming what is wrong. The same spec, model bytes and snapshot compile
to the same bytes, so to the same version id; any change is a new version.

Budget too small to start is a 422 (the spec is unusable as written), not a 402: nothing
was spent and the tenant's balance is not the problem.
"""

from __future__ import annotations

import rfc8785

from hartonomous.agents.compiled import CompiledAgent, CompiledModel, CompiledTool
from hartonomous.agents.constitution import Governor
from hartonomous.agents.names import step_credits
from hartonomous.agents.spec import AgentSpecIn, ForbidTool, RequireApproval
from hartonomous.autonomy.policy import Policy
from hartonomous.autonomy.registry import AGENT_TOOLS, REGISTRY
from hartonomous.errors import UnprocessableContent
from hartonomous.generation.service import filters_json
from hartonomous.inference.types import ModelRef


def compile_spec(
    spec: AgentSpecIn, *, model: ModelRef, snapshot: int, policy: Policy
) -> CompiledAgent:
    """The compiled agent, or 422 naming the tool, rule or number that cannot be compiled."""
    _check_rules(spec)
    tools = [_tool(spec, ref.name, ref.requires_approval, policy) for ref in spec.tools]
    compiled = CompiledAgent(
        name=spec.name,
        description=spec.description,
        instructions=spec.instructions,
        model=CompiledModel(id=model.id, sha256=model.sha256, name=model.name),
        filters=filters_json(spec.knowledge.to_search_filter()),
        snapshot=snapshot,
        tools=sorted(tools, key=lambda t: t.name),
        constitution=[
            r.model_dump(mode="json", by_alias=True, exclude_none=True) for r in spec.constitution
        ],
        credits_per_run=float(spec.budget.credits_per_run),
        max_steps=spec.budget.max_steps,
        max_duration_s=spec.budget.max_duration_s,
        output_schema=spec.output_schema,
        temperature=float(spec.temperature),
        max_tokens_per_step=spec.max_tokens_per_step,
    )
    check_startable(compiled)
    try:
        compiled.canonical()
    except rfc8785.CanonicalizationError as exc:
        # Integers past 2**53 or NaN (an output schema's bound, a metadata filter's value):
        # JSON numbers that canonical JSON (RFC 8785) cannot carry exactly.
        raise UnprocessableContent(
            f"the spec holds a number canonical JSON cannot carry exactly: {exc}"
        ) from exc
    return compiled


def _check_rules(spec: AgentSpecIn) -> None:
    """Tool rules must name registered actions (a typo would silently guard nothing)."""
    for i, rule in enumerate(spec.constitution):
        if isinstance(rule, ForbidTool | RequireApproval) and rule.tool not in REGISTRY:
            raise UnprocessableContent(
                f"constitution[{i}] ({rule.type}) names {rule.tool!r}, which is not a "
                f"registered action: the registry has {sorted(REGISTRY)}",
                tool=rule.tool,
                rule=f"constitution[{i}]",
            )


def _tool(spec: AgentSpecIn, name: str, flag: bool | None, policy: Policy) -> CompiledTool:
    action = REGISTRY.get(name)
    if action is None:
        raise UnprocessableContent(
            f"unknown tool {name!r}: agents' tools are {sorted(AGENT_TOOLS)}", tool=name
        )
    if name not in AGENT_TOOLS:
        raise UnprocessableContent(
            f"{name!r} is a loop action, not an agents' tool: agents' tools are "
            f"{sorted(AGENT_TOOLS)}",
            tool=name,
        )
    for i, rule in enumerate(spec.constitution):
        if isinstance(rule, ForbidTool) and rule.tool == name:
            raise UnprocessableContent(
                f"tool {name!r} is listed and constitution[{i}] forbids it: drop one of them",
                tool=name,
                rule=f"constitution[{i}]",
            )
    decision = policy.decide(name)
    if not decision.allowed:
        raise UnprocessableContent(
            f"the tenant policy forbids tool {name!r} ({decision.rule})",
            tool=name,
            rule=decision.rule,
        )
    gated = flag is True or any(
        isinstance(rule, RequireApproval) and rule.tool == name for rule in spec.constitution
    )
    return CompiledTool(name, action.version, action.scope.value, gated)


def check_startable(compiled: CompiledAgent) -> None:
    """422 when the credit cap cannot pay one step (at compile, and again at a run's start)."""
    governor = Governor(compiled)
    needed = step_credits(compiled.max_tokens_per_step)
    if governor.credit_cap < needed:
        raise UnprocessableContent(
            f"budget too small to start: one step is estimated {needed} credits and the "
            f"cap ({governor.cap_rule('max_credits')}) is {governor.credit_cap}",
            step_credits=needed,
            credit_cap=governor.credit_cap,
        )
