"""The action registry: every action the loop and agents may run, as typed data.

An action is a name, a version, a JSON schema for its parameters, the scope it needs,
whether and how it is undone, a cost estimate, and (for the loop's) the metric it means to
move. ``callers`` says who may run it: the loop's maintenance actions (executors in
``actions/``) or agents' tools (executors in ``hartonomous.agents.tools``). This module is
only the contract, so the API can list it and the planners and validators read the same
schemas. A name not in ``REGISTRY`` is refused before anything runs.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from functools import cache
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import best_match

from hartonomous.autonomy.types import ProblemKind
from hartonomous.domain.tenants import Scope
from hartonomous.errors import UnprocessableContent

ATOM_ID = {"type": "string", "pattern": "^[0-9a-f-]{36}$"}
QUERY = {"type": "string", "minLength": 1, "maxLength": 2000}


class Caller(StrEnum):
    LOOP = "loop"  # the autonomous loop's maintenance actions
    AGENT = "agent"  # tools an agent may be compiled with


@dataclass(frozen=True)
class ActionSpec:
    name: str
    version: int
    description: str
    parameters: dict[str, Any]  # JSON schema (draft 2020-12), additionalProperties false
    # The scope a key needs to approve it (enforced where a human decides). An action the
    # tenant's policy approves by itself runs under that policy, which only an admin key
    # may set (PUT /v1/policy), so it is never run on a narrower key's say-so.
    scope: Scope
    reversible: bool
    reversal: str  # how it is undone, or why it cannot be
    cost_credits: float  # the estimate the budget checks before Act (or a tool call)
    metric: str  # what Learn recomputes, higher is better ("" for agents' tools)
    addresses: ProblemKind | None  # the problem the loop fixes with it (None: a tool)
    callers: frozenset[Caller] = field(default=frozenset({Caller.LOOP}))
    # What a policy that does not name it says: the loop's actions and writing tools wait
    # for a human; reading tools (search, read_atom) do not.
    default_requires_approval: bool = True

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "description": self.description,
            "parameters": self.parameters,
            "scope": self.scope.value,
            "reversible": self.reversible,
            "reversal": self.reversal,
            "cost_estimate_credits": self.cost_credits,
            "metric": self.metric or None,
            "addresses": self.addresses.value if self.addresses else None,
            "callers": sorted(self.callers),
            "default_requires_approval": self.default_requires_approval,
        }


def _object(properties: dict[str, Any], required: list[str]) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": properties,
        "required": required,
        "additionalProperties": False,
    }


REGISTRY: Mapping[str, ActionSpec] = {
    spec.name: spec
    for spec in (
        ActionSpec(
            name="learn_association",
            version=1,
            description=(
                "Link a knowledge-gap query to the atom that answers it (a LEARNED_ASSOCIATION "
                "edge); search then lifts that atom for queries close to this one."
            ),
            parameters=_object({"query": QUERY, "atom_id": ATOM_ID}, ["query", "atom_id"]),
            scope=Scope.WRITE,
            reversible=True,
            reversal="the association and its edge are deleted",
            cost_credits=0.02,
            metric="mean reciprocal rank of the atom for the gap's recorded queries, replayed",
            addresses=ProblemKind.KNOWLEDGE_GAP,
        ),
        ActionSpec(
            name="mark_duplicates",
            version=1,
            description=(
                "Link near-duplicate chunks (cosine >= 0.95) DUPLICATE_OF their canonical "
                "chunk, so search shows one of each group."
            ),
            parameters=_object(
                {
                    "pairs": {
                        "type": "array",
                        "minItems": 1,
                        "maxItems": 100,
                        "items": _object(
                            {"duplicate_id": ATOM_ID, "canonical_id": ATOM_ID},
                            ["duplicate_id", "canonical_id"],
                        ),
                    }
                },
                ["pairs"],
            ),
            scope=Scope.WRITE,
            reversible=True,
            reversal="the DUPLICATE_OF edges the action wrote are deleted",
            cost_credits=0.05,
            metric="share of result slots not taken by a near-duplicate, over probe queries",
            addresses=ProblemKind.NEAR_DUPLICATES,
        ),
        ActionSpec(
            name="retry_failed_workflow",
            version=1,
            description="Run a failed ingestion or model workflow of the tenant again.",
            parameters=_object(
                {"instance_id": {"type": "string", "minLength": 1, "maxLength": 200}},
                ["instance_id"],
            ),
            scope=Scope.WRITE,
            reversible=False,
            reversal="none: what the workflow wrote stays (it is the tenant's own data)",
            cost_credits=0.5,
            metric="1 when its own retry ran and did not fail in turn, else 0",
            addresses=ProblemKind.FAILED_WORKFLOW,
        ),
        ActionSpec(
            name="cache_answer",
            version=1,
            description=(
                "Serve a repeated prompt from an answer cache keyed by the prompt, the model's "
                "SHA-256 and the atoms retrieved for it (temperature 0 requests only)."
            ),
            parameters=_object({"prompt": QUERY, "receipt_id": ATOM_ID}, ["prompt", "receipt_id"]),
            scope=Scope.WRITE,
            reversible=True,
            reversal="the cache entry is deleted",
            cost_credits=0.05,
            metric="credits per answer of the prompt (negated), replayed",
            addresses=ProblemKind.REPEATED_PROMPT,
        ),
        ActionSpec(
            name="discover_concepts",
            version=1,
            description=(
                "Cluster the tenant's chunks of one modality into named concepts (keeping "
                "the ids of concepts found again) and bind them IS_A and RELATED."
            ),
            parameters=_object(
                {"modality": {"type": "string", "enum": ["text", "code", "document"]}},
                ["modality"],
            ),
            scope=Scope.WRITE,
            reversible=False,
            reversal="none: concepts are only ever rediscovered (a later run keeps their ids)",
            cost_credits=0.1,
            metric="share of the modality's chunks that belong to a concept",
            addresses=ProblemKind.UNCLUSTERED_CHUNKS,
        ),
        ActionSpec(
            name="search",
            version=1,
            description=(
                "Hybrid search of the agent's knowledge scope, frozen when it was compiled; "
                "returns the best passages with their atom ids."
            ),
            parameters=_object(
                {"query": QUERY, "k": {"type": "integer", "minimum": 1, "maximum": 10}},
                ["query"],
            ),
            scope=Scope.READ,
            reversible=True,
            reversal="nothing to undo: it reads",
            cost_credits=0.01,
            metric="",
            addresses=None,
            callers=frozenset({Caller.AGENT}),
            default_requires_approval=False,
        ),
        ActionSpec(
            name="read_atom",
            version=1,
            description="Read one atom of the agent's knowledge scope (a passage) by its id.",
            parameters=_object({"atom_id": ATOM_ID}, ["atom_id"]),
            scope=Scope.READ,
            reversible=True,
            reversal="nothing to undo: it reads",
            cost_credits=0.0,
            metric="",
            addresses=None,
            callers=frozenset({Caller.AGENT}),
            default_requires_approval=False,
        ),
        ActionSpec(
            name="save_note",
            version=1,
            description="Store a text note as an atom of the tenant (a write).",
            parameters=_object(
                {
                    "title": {"type": "string", "minLength": 1, "maxLength": 200},
                    "text": {"type": "string", "minLength": 1, "maxLength": 4000},
                },
                ["title", "text"],
            ),
            scope=Scope.WRITE,
            reversible=True,
            reversal="the note atom can be deleted (DELETE /v1/atoms/{id})",
            cost_credits=0.01,
            metric="",
            addresses=None,
            callers=frozenset({Caller.AGENT}),
        ),
    )
}
# The loop plans, executes and measures only these; agents call only AGENT_TOOLS.
LOOP_ACTIONS: Mapping[str, ActionSpec] = {
    name: spec for name, spec in REGISTRY.items() if Caller.LOOP in spec.callers
}
AGENT_TOOLS: Mapping[str, ActionSpec] = {
    name: spec for name, spec in REGISTRY.items() if Caller.AGENT in spec.callers
}


@cache
def _validator(name: str) -> Draft202012Validator:
    return Draft202012Validator(REGISTRY[name].parameters)


def spec_of(name: str) -> ActionSpec:
    """The spec of a registered action; any other name is refused (422)."""
    spec = REGISTRY.get(name)
    if spec is None:
        raise UnprocessableContent(
            f"unknown action {name!r}: the registry has {sorted(REGISTRY)}", action=name
        )
    return spec


def parameter_errors(name: str, parameters: Any) -> list[str]:
    """Why ``parameters`` do not fit the action's schema (empty: they do)."""
    spec_of(name)
    errors = sorted(_validator(name).iter_errors(parameters), key=lambda e: list(e.path))
    return [f"{'/'.join(map(str, e.path)) or '(parameters)'}: {e.message}" for e in errors][:10]


def validate(name: str, parameters: Any) -> ActionSpec:
    """The spec, or 422 naming the first schema violation."""
    spec = spec_of(name)
    error = best_match(_validator(name).iter_errors(parameters))
    if error is not None:
        where = "/".join(map(str, error.path)) or "(parameters)"
        raise UnprocessableContent(
            f"parameters of {name!r} do not fit its schema at {where}: {error.message}",
            action=name,
        )
    return spec
