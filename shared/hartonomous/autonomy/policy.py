"""A tenant's policy for the loop: what may run, what needs a human, budgets, the schedule.

The platform decides at the point of execution, from this policy, never from the model.
Default (no policy stored): the schedule is off and every action needs approval.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StrictBool, field_validator

from hartonomous.autonomy.registry import REGISTRY

SIX_DAYS_S = 6 * 24 * 3600


def not_a_boolean(value: object) -> object:
    """JSON ``true`` is no number, though Python's bool is an int (pydantic's lax mode would
    take it as 1); integral numbers such as ``60.0`` stay accepted, as JSON Schema has them."""
    if isinstance(value, bool):
        raise ValueError("a boolean is not a number")
    return value


NOT_A_BOOLEAN = BeforeValidator(not_a_boolean)
Int = Annotated[int, NOT_A_BOOLEAN]
Number = Annotated[float, NOT_A_BOOLEAN]


class ActionRule(BaseModel):
    model_config = ConfigDict(extra="forbid")

    allowed: StrictBool = Field(default=True, description="May the loop run this action at all")
    requires_approval: StrictBool = Field(
        default=True, description="Does each run of it wait for an admin's decision"
    )


class Budget(BaseModel):
    model_config = ConfigDict(extra="forbid")

    credits: Number = Field(default=5.0, gt=0, le=10_000, description="Credits a run may spend")
    duration_s: Int = Field(
        default=3600, gt=0, le=30 * 24 * 3600, description="Wall time a run may take"
    )
    max_iterations: Int = Field(
        default=3, ge=1, le=100, description="Analyze-to-Learn iterations per run"
    )


class Schedule(BaseModel):
    model_config = ConfigDict(extra="forbid")

    enabled: StrictBool = Field(default=False, description="Start runs on a timer")
    every_minutes: Int = Field(
        default=1440, ge=15, le=7 * 24 * 60, description="Minutes between scheduled runs"
    )


class Policy(BaseModel):
    """The body of ``PUT /v1/policy`` and what ``GET`` answers (defaults filled in)."""

    model_config = ConfigDict(extra="forbid")

    actions: dict[str, ActionRule] = Field(
        default_factory=dict,
        description="Rules by action name (the loop's actions and agents' tools); one not "
        "named here gets its default rule: allowed, and requires approval unless it only "
        "reads (search, read_atom). Unknown names are refused.",
        json_schema_extra={"propertyNames": {"enum": [name for name in sorted(REGISTRY)]}},
    )
    budget: Budget = Field(default_factory=Budget, description="Defaults of each run")
    schedule: Schedule = Field(default_factory=Schedule)
    approval_timeout_s: Int = Field(
        default=24 * 3600,
        ge=60,
        le=90 * 24 * 3600,
        description="How long an approval request waits before it expires (longer than the "
        "6-day cap of one Durable timer works: the workflow waits in a loop)",
    )
    planner: Literal["model", "deterministic"] = Field(
        default="model",
        description="model: the model plans under a grammar, the documented rules fill in "
        "when its plan is unusable; deterministic: the rules alone",
    )
    on_action_failure: Literal["continue", "stop"] = Field(
        default="continue", description="After an action is dead-lettered"
    )
    audit_level: Literal["summary", "full"] = Field(
        default="summary",
        description="summary: phase rows hold ids and figures; full: also the prompts, "
        "the model's raw output and every signal",
    )

    @field_validator("actions")
    @classmethod
    def _known_actions(cls, value: dict[str, ActionRule]) -> dict[str, ActionRule]:
        unknown = sorted(set(value) - set(REGISTRY))
        if unknown:
            raise ValueError(f"unknown actions {unknown}: the registry has {sorted(REGISTRY)}")
        return value

    def rule(self, action: str) -> ActionRule:
        """The stored rule, else the action's default (allowed; approval as its spec says)."""
        if action in self.actions:
            return self.actions[action]
        spec = REGISTRY.get(action)
        return ActionRule(requires_approval=spec.default_requires_approval if spec else True)

    def decide(self, action: str) -> Decision:
        """What the platform does with a planned action, and which rule says so."""
        if action not in REGISTRY:
            return Decision(False, False, "registry:unknown_action")
        rule = self.rule(action)
        source = "policy" if action in self.actions else "policy:default"
        if not rule.allowed:
            return Decision(False, False, f"{source}:{action}.allowed=false")
        if rule.requires_approval:
            return Decision(True, True, f"{source}:{action}.requires_approval=true")
        return Decision(True, False, f"{source}:{action}.requires_approval=false")


@dataclass(frozen=True)
class Decision:
    allowed: bool
    needs_approval: bool
    rule: str  # recorded as the decider: which rule decided
