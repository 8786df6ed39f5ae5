"""The agent factory's rows as plain values: what the repository returns."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any


@dataclass(frozen=True)
class AgentRecord:
    tenant_id: str
    name: str
    latest_version: str
    pinned_version: str | None
    status: str  # AgentStatus
    created_at: datetime
    updated_at: datetime
    retired_at: datetime | None

    @property
    def current_version(self) -> str:
        """What the name runs: the pinned version, else the latest."""
        return self.pinned_version or self.latest_version


@dataclass(frozen=True)
class VersionRecord:
    tenant_id: str
    id: str  # SHA-256 of the compiled spec's canonical JSON
    name: str
    spec: dict[str, Any]  # the compiled spec (compiler.CompiledAgent.to_json())
    model_id: str
    model_sha256: str
    snapshot: int
    created_at: datetime
    created_by: str | None


@dataclass(frozen=True)
class AgentRunRecord:
    id: str
    tenant_id: str
    agent_name: str
    version_id: str
    instance_id: str
    status: str  # RunStatus
    input_text: str
    seed: int | None
    budget_credits: float
    max_steps: int
    max_duration_s: int
    steps: int
    spent_credits: float
    answer: str | None
    answer_atom_id: str | None
    receipt: dict[str, Any] | None
    error: str | None
    started_at: datetime
    ended_at: datetime | None


@dataclass(frozen=True)
class StepRecord:
    id: str
    tenant_id: str
    run_id: str
    step: int
    kind: str  # StepKind
    name: str | None  # the tool
    arguments: dict[str, Any] | None
    status: str  # StepStatus
    decided_by: str | None
    receipt_id: str | None
    result: dict[str, Any] | None
    cost_credits: float
    started_at: datetime
    ended_at: datetime | None


@dataclass(frozen=True)
class ViolationRecord:
    tenant_id: str
    run_id: str
    step: int
    rule_type: str
    detail: str
    outcome: str  # ViolationOutcome
    created_at: datetime


@dataclass(frozen=True)
class AgentApprovalRecord:
    id: str
    tenant_id: str
    run_id: str
    step_id: str
    instance_id: str
    reason: str
    status: str  # autonomy.types.ApprovalStatus
    requested_at: datetime
    expires_at: datetime
    decided_at: datetime | None
    decided_by: str | None
    note: str | None
