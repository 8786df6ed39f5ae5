"""The constitution, enforced in code at every step: what a tool call or an answer may do.

The model proposes; this module decides, from the compiled agent and the tenant's policy as
it stands now, never from anything the model, a document or the input says. A tool call is
judged in this order, the first refusal winning (its decider is recorded):

1. ``registry:unknown_action``: not a registered action;
2. ``agent:not_allowed``: not one of the agent's compiled tools (the allow-list), or not an
   agents' tool at all;
3. ``constitution[i]:forbid_tool``: a rule forbids it;
4. the tenant policy's rule that disallows it (``policy:...allowed=false``);
5. ``registry:schema``: its arguments do not fit the tool's schema (not a violation: the
   model is told and may try again);
6. then whether it waits for a human: the agent's own flag (``agent:requires_approval``), a
   ``require_approval`` rule, or the policy (``policy:...requires_approval=true``). Every
   decider that asks is recorded; none can waive another's.

Refusals 1 to 4 are violations that end the run. An answer is judged by every output rule:
``output_schema`` (the spec's, ``agent:output_schema``, and rules of that type),
``cite_sources`` and ``refuse_pattern``; each broken rule is a violation whose
``on_violation`` ends the run or asks a human. Caps: the smaller of the budget and any
``max_credits`` / ``max_steps`` rule.
"""

from __future__ import annotations

import json
from collections.abc import Collection
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import re2
from jsonschema import Draft202012Validator, validators
from jsonschema.exceptions import ValidationError, best_match

from hartonomous.agents.compiled import CompiledAgent
from hartonomous.agents.spec import QUIET
from hartonomous.agents.types import ViolationOutcome
from hartonomous.autonomy.policy import Policy
from hartonomous.autonomy.registry import AGENT_TOOLS, REGISTRY, parameter_errors

# Presets of refuse_pattern (RE2). Card numbers are confirmed by the Luhn checksum, so an
# order number of 16 digits is not refused by chance (9 in 10 random numbers fail it).
PRESETS = {
    "email": r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}",
    # A run of digit groups (spaces or dashes between them); every span of whole groups
    # holding 13 to 19 digits is Luhn-checked, so groups before or after a card number do
    # not hide it. Every window of an ungrouped run would refuse most 16-digit numbers.
    "card_number": r"\d+(?:[ -]\d+)*",
    "phone": r"\+?\(?\d{1,4}\)?(?:[ .-]?\(?\d{2,4}\)?){2,5}",
}
MIN_PHONE_DIGITS = 9


def _re2_pattern(validator: Any, pattern: str, instance: Any, schema: Any) -> Any:
    """JSON Schema's ``pattern`` matched with RE2 (linear time): a tenant's output schema
    cannot hang a worker with a catastrophic pattern (Python's ``re`` backtracks)."""
    if validator.is_type(instance, "string") and not re2.search(pattern, instance, QUIET):
        yield ValidationError(f"{instance[:100]!r} does not match {pattern!r}")


# The output schemas' validator (spec.py refuses patternProperties, which would use ``re``).
OutputValidator = validators.extend(  # type: ignore[no-untyped-call]
    Draft202012Validator, {"pattern": _re2_pattern}
)


@dataclass(frozen=True)
class Violation:
    rule: str  # e.g. "constitution[2]:refuse_pattern", "agent:not_allowed", a policy rule
    detail: str
    outcome: ViolationOutcome


@dataclass(frozen=True)
class ToolVerdict:
    violation: Violation | None  # set: refused, and the run ends
    invalid: str | None  # set: the arguments do not fit (the model is told)
    approvers: list[str]  # the deciders that require a human; empty: it runs as it is

    @property
    def runs(self) -> bool:
        return self.violation is None and self.invalid is None

    @property
    def needs_approval(self) -> bool:
        return self.runs and bool(self.approvers)

    @property
    def decided_by(self) -> str:
        if self.violation is not None:
            return self.violation.rule
        if self.invalid is not None:
            return "registry:schema"
        return ",".join(self.approvers) if self.approvers else "agent:allowed"


def luhn(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


class Governor:
    """One compiled agent's rules, ready to judge its steps."""

    def __init__(self, agent: CompiledAgent) -> None:
        self.agent = agent

    @cached_property
    def credit_cap(self) -> float:
        caps = [r["credits"] for r in self.agent.constitution if r["type"] == "max_credits"]
        return float(min([self.agent.credits_per_run, *caps]))

    @cached_property
    def step_cap(self) -> int:
        caps = [r["steps"] for r in self.agent.constitution if r["type"] == "max_steps"]
        return int(min([self.agent.max_steps, *caps]))

    def cap_rule(self, kind: str) -> str:
        """Which rule sets a cap (``max_credits`` or ``max_steps``): the decider recorded."""
        value = self.credit_cap if kind == "max_credits" else self.step_cap
        field = "credits" if kind == "max_credits" else "steps"
        for i, rule in enumerate(self.agent.constitution):
            if rule["type"] == kind and rule[field] == value:
                return f"constitution[{i}]:{kind}"
        return f"budget:{'credits_per_run' if kind == 'max_credits' else 'max_steps'}"

    # -- tool calls ----------------------------------------------------------------------------

    def tool_call(self, tool: str, arguments: Any, policy: Policy) -> ToolVerdict:
        def refuse(rule: str, detail: str) -> ToolVerdict:
            return ToolVerdict(Violation(rule, detail, ViolationOutcome.END), None, [])

        if tool not in REGISTRY:
            return refuse("registry:unknown_action", f"{tool[:64]!r} is not a registered action")
        compiled = self.agent.tool(tool)
        if tool not in AGENT_TOOLS or compiled is None:
            allowed = [t.name for t in self.agent.tools]
            return refuse("agent:not_allowed", f"{tool} is not one of the agent's tools {allowed}")
        for i, rule in enumerate(self.agent.constitution):
            if rule["type"] == "forbid_tool" and rule["tool"] == tool:
                return refuse(f"constitution[{i}]:forbid_tool", f"the constitution forbids {tool}")
        decision = policy.decide(tool)
        if not decision.allowed:
            return refuse(decision.rule, f"the tenant policy disallows {tool}")
        errors = parameter_errors(tool, arguments)
        if errors:
            return ToolVerdict(None, "; ".join(errors)[:2000], [])
        approvers: list[str] = []
        if compiled.requires_approval:
            approvers.append("agent:requires_approval")
        approvers += [
            f"constitution[{i}]:require_approval"
            for i, rule in enumerate(self.agent.constitution)
            if rule["type"] == "require_approval" and rule["tool"] == tool
        ]
        if decision.needs_approval:
            approvers.append(decision.rule)
        return ToolVerdict(None, None, approvers)

    # -- answers -------------------------------------------------------------------------------

    def answer(self, text: str, citations: list[str], sources: Collection[str]) -> list[Violation]:
        """Every output rule the answer breaks (empty: it may be released)."""
        out: list[Violation] = []
        if self.agent.output_schema is not None:
            problem = _schema_problem(self.agent.output_schema, text)
            if problem:
                out.append(Violation("agent:output_schema", problem, ViolationOutcome.END))
        for i, rule in enumerate(self.agent.constitution):
            name, outcome = f"constitution[{i}]:{rule['type']}", rule.get("on_violation", "end")
            detail = self._broken(rule, text, citations, sources)
            if detail is not None:
                out.append(Violation(name, detail, ViolationOutcome(outcome)))
        return out

    @staticmethod
    def _broken(
        rule: dict[str, Any], text: str, citations: list[str], sources: Collection[str]
    ) -> str | None:
        kind = rule["type"]
        if kind == "cite_sources":
            unknown = [c for c in citations if c not in sources]
            if unknown:
                return f"cites atoms the run did not retrieve: {unknown[:5]}"
            if len(set(citations)) < rule["min_citations"]:
                least = rule["min_citations"]
                return f"cites {len(set(citations))} retrieved atoms; at least {least} required"
            return None
        if kind == "refuse_pattern":
            found = _match(rule, text)
            return f"the answer matches {rule.get('preset') or 'the pattern'}" if found else None
        if kind == "output_schema":
            return _schema_problem(rule["schema"], text)
        return None


def _match(rule: dict[str, Any], text: str) -> bool:
    preset = rule.get("preset")
    regex = re2.compile(PRESETS[preset] if preset else rule["pattern"], QUIET)
    if preset == "card_number":
        return any(_holds_card(re2.split(r"[ -]", m.group(0))) for m in regex.finditer(text))
    if preset == "phone":
        return any(len(_digits(m.group(0))) >= MIN_PHONE_DIGITS for m in regex.finditer(text))
    return regex.search(text) is not None


def _holds_card(groups: list[str]) -> bool:
    """Does a span of consecutive groups hold 13 to 19 digits that pass the Luhn check?"""
    for start in range(len(groups)):
        digits = ""
        for group in groups[start:]:
            digits += group
            if len(digits) > 19:
                break
            if len(digits) >= 13 and luhn(digits):
                return True
    return False


def _digits(text: str) -> str:
    return "".join(ch for ch in text if ch.isdigit())


def _schema_problem(schema: dict[str, Any], text: str) -> str | None:
    try:
        value = json.loads(text)
    except ValueError:
        return "the answer is not JSON, and the output schema requires it"
    error = best_match(OutputValidator(schema).iter_errors(value))
    if error is None:
        return None
    where = "/".join(map(str, error.path)) or "(answer)"
    return f"the answer does not fit the output schema at {where}: {error.message}"[:2000]
