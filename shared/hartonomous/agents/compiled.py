"""A compiled agent: the immutable, content-addressed form a version stores and a run obeys.

Its id is the SHA-256 of its canonical JSON (RFC 8785): the same compiled spec is the same
version, and any change (instructions, a rule, the model's bytes, the knowledge snapshot) is
a new one. Everything a run needs is in here; nothing is looked up by name at run time
except the tenant's policy, which the platform checks again at every step.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, field
from typing import Any

import rfc8785

FORMAT = "hartonomous.agent/1"


@dataclass(frozen=True)
class CompiledTool:
    name: str
    version: int  # the registry's version of the tool when compiled
    scope: str
    requires_approval: bool  # the spec's own flag or a require_approval rule (policy: at run)


@dataclass(frozen=True)
class CompiledModel:
    id: str
    sha256: str
    name: str


@dataclass(frozen=True)
class CompiledAgent:
    name: str
    description: str
    instructions: str
    model: CompiledModel
    filters: dict[str, Any]  # the knowledge scope, as a receipt records a search filter
    snapshot: int  # the knowledge watermark: chunk links with id <= this
    tools: list[CompiledTool]  # sorted by name
    constitution: list[dict[str, Any]]  # typed rules, defaults filled in, in the given order
    credits_per_run: float
    max_steps: int
    max_duration_s: int
    output_schema: dict[str, Any] | None
    temperature: float
    max_tokens_per_step: int
    format: str = field(default=FORMAT)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> CompiledAgent:
        values = dict(data)
        values["model"] = CompiledModel(**values["model"])
        values["tools"] = [CompiledTool(**t) for t in values["tools"]]
        return cls(**values)

    def canonical(self) -> bytes:
        """RFC 8785 canonical JSON: the bytes the version id hashes."""
        return rfc8785.dumps(self.to_json())

    @property
    def version_id(self) -> str:
        return hashlib.sha256(self.canonical()).hexdigest()

    def tool(self, name: str) -> CompiledTool | None:
        return next((t for t in self.tools if t.name == name), None)
