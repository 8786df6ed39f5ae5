"""What a tenant asks for (``POST /v1/agents``): the agent spec and its constitution's rules.

Everything is bounded and typed here, so a malformed rule is a 422 before compilation. The
constitution is data the platform enforces in code (``constitution.py``), never text the
model is asked to respect.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import re2
from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError
from pydantic import BaseModel, ConfigDict, Field, StrictBool, field_validator, model_validator

from hartonomous.autonomy.policy import Int, Number
from hartonomous.knowledge.filters import Filters

NAME_PATTERN = r"^[a-z][a-z0-9-]{0,62}$"  # never 64 hex characters: those are version ids
VERSION_PATTERN = r"^[0-9a-f]{64}$"
RESERVED_NAMES = frozenset({"runs"})  # paths under /v1/agents that are not agents
MAX_TOOLS = 32
MAX_RULES = 50
MAX_PATTERN_CHARS = 500
MAX_SCHEMA_CHARS = 16_000  # an output schema, as canonical JSON
MAX_SCHEMA_DEPTH = 16
OnViolation = Literal["end", "approval"]
QUIET = re2.Options()
QUIET.log_errors = False  # a tenant's bad pattern is their 422, not our log's noise


def _bounded_schema(value: dict[str, Any]) -> dict[str, Any]:
    """A JSON Schema (2020-12) of bounded size and depth that is itself valid."""
    import json

    if len(json.dumps(value)) > MAX_SCHEMA_CHARS:
        raise ValueError(f"the schema is longer than {MAX_SCHEMA_CHARS} characters as JSON")
    if _depth(value) > MAX_SCHEMA_DEPTH:
        raise ValueError(f"the schema nests deeper than {MAX_SCHEMA_DEPTH} levels")
    _tenant_safe(value)
    try:
        Draft202012Validator.check_schema(value)
    except SchemaError as exc:
        raise ValueError(f"not a valid JSON Schema (2020-12): {exc.message}") from exc
    return value


def _tenant_safe(value: Any) -> None:
    """What the platform will not run for a tenant: ``pattern`` must compile as RE2 (the
    validator matches it with RE2, in linear time); ``patternProperties`` is refused (the
    reference validator matches those with Python's backtracking ``re``, also inside
    ``additionalProperties``); ``$ref`` must stay inside the schema (``#...``: nothing is
    fetched)."""
    if isinstance(value, list):
        for item in value:
            _tenant_safe(item)
        return
    if not isinstance(value, dict):
        return
    if "patternProperties" in value:
        raise ValueError("patternProperties is not supported (use properties or propertyNames)")
    ref = value.get("$ref")
    if isinstance(ref, str) and not ref.startswith("#"):
        raise ValueError(f"$ref {ref[:100]!r} points outside the schema; only '#...' is allowed")
    pattern = value.get("pattern")
    if isinstance(pattern, str):
        try:
            re2.compile(pattern, QUIET)
        except re2.error as exc:
            raise ValueError(f"pattern {pattern[:100]!r} is not valid RE2 syntax: {exc}") from exc
    for item in value.values():
        _tenant_safe(item)


def _depth(value: Any, level: int = 0) -> int:
    if level > MAX_SCHEMA_DEPTH:
        return level
    if isinstance(value, dict):
        return max((_depth(v, level + 1) for v in value.values()), default=level)
    if isinstance(value, list):
        return max((_depth(v, level + 1) for v in value), default=level)
    return level


class _Rule(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ForbidTool(_Rule):
    """The tool never runs, whatever the model or a document says; an attempt ends the run."""

    type: Literal["forbid_tool"]
    tool: str = Field(min_length=1, max_length=64)


class RequireApproval(_Rule):
    """Every call of the tool waits for an admin's decision (the approvals API)."""

    type: Literal["require_approval"]
    tool: str = Field(min_length=1, max_length=64)


class MaxCredits(_Rule):
    """A per-run credit cap (the smaller of this and the budget holds)."""

    type: Literal["max_credits"]
    credits: Number = Field(gt=0, le=10_000)


class MaxSteps(_Rule):
    """At most this many steps (the smaller of this and the budget holds)."""

    type: Literal["max_steps"]
    steps: Int = Field(ge=1, le=50)


class CiteSources(_Rule):
    """An answer must cite atoms the run retrieved (its passages or what its tools read)."""

    type: Literal["cite_sources"]
    min_citations: Int = Field(default=1, ge=1, le=20)
    on_violation: OnViolation = "end"


class RefusePattern(_Rule):
    """An answer matching the pattern (RE2 syntax: linear time) or the preset is refused."""

    type: Literal["refuse_pattern"]
    preset: Literal["email", "card_number", "phone"] | None = Field(
        default=None, description="email addresses; card numbers (Luhn-checked); phone numbers"
    )
    pattern: str | None = Field(default=None, min_length=1, max_length=MAX_PATTERN_CHARS)
    on_violation: OnViolation = "end"

    @field_validator("pattern")
    @classmethod
    def _compiles(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                re2.compile(value, QUIET)
            except re2.error as exc:
                raise ValueError(f"the pattern is not valid RE2 syntax: {exc}") from exc
        return value

    @model_validator(mode="after")
    def _one_of(self) -> RefusePattern:
        if (self.preset is None) == (self.pattern is None):
            raise ValueError("give exactly one of preset and pattern")
        return self


class OutputSchema(_Rule):
    """An answer must be JSON valid against the schema."""

    type: Literal["output_schema"]
    json_schema: dict[str, Any] = Field(alias="schema")
    on_violation: OnViolation = "end"

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    @field_validator("json_schema")
    @classmethod
    def _valid(cls, value: dict[str, Any]) -> dict[str, Any]:
        return _bounded_schema(value)


Rule = Annotated[
    ForbidTool | RequireApproval | MaxCredits | MaxSteps | CiteSources | RefusePattern
    | OutputSchema,
    Field(discriminator="type"),
]  # fmt: skip


class ToolRef(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=64, description="A tool of GET /v1/actions")
    requires_approval: StrictBool | None = Field(
        default=None,
        description="true: every call waits for an admin. The tenant policy and the "
        "constitution may also require it; nothing here can waive theirs.",
    )


class AgentBudget(BaseModel):
    model_config = ConfigDict(extra="forbid")

    credits_per_run: Number = Field(default=1.0, gt=0, le=10_000)
    max_steps: Int = Field(default=6, ge=1, le=50)
    max_duration_s: Int = Field(default=600, ge=1, le=7 * 24 * 3600)


class AgentSpecIn(BaseModel):
    """The body of ``POST /v1/agents``."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=NAME_PATTERN, description="Lower case letters, digits, '-'")
    description: str = Field(default="", max_length=2000)
    model_id: str = Field(
        min_length=1, max_length=64, description="A ready model of the tenant, or gemma-3-270m"
    )
    instructions: str = Field(default="", max_length=8000)
    knowledge: Filters = Field(
        default_factory=Filters,
        description="The agent's knowledge scope, as search filters; compilation freezes it "
        "at the knowledge indexed then (the snapshot)",
    )
    tools: list[ToolRef] = Field(default_factory=list, max_length=MAX_TOOLS)
    constitution: list[Rule] = Field(default_factory=list, max_length=MAX_RULES)
    budget: AgentBudget = Field(default_factory=AgentBudget)
    output_schema: dict[str, Any] | None = Field(
        default=None,
        description="JSON Schema (2020-12) the answer must satisfy; the model decodes under "
        "it and the platform checks it",
    )
    temperature: Number = Field(default=0.0, ge=0, le=2)
    max_tokens_per_step: Int = Field(default=192, ge=16, le=1024)

    @field_validator("name")
    @classmethod
    def _not_reserved(cls, value: str) -> str:
        """``/v1/agents/runs`` lists runs: a name "runs" would be shadowed by it."""
        if value in RESERVED_NAMES:
            raise ValueError(f"{value!r} is reserved (/v1/agents/{value} is another resource)")
        return value

    @field_validator("output_schema")
    @classmethod
    def _valid(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        return None if value is None else _bounded_schema(value)

    @field_validator("tools")
    @classmethod
    def _distinct(cls, value: list[ToolRef]) -> list[ToolRef]:
        names = [t.name for t in value]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f"tools named more than once: {twice}")
        return value
