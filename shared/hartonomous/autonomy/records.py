"""The loop's rows as plain values: what the repository returns and the service answers."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any


@dataclass(frozen=True)
class RunRecord:
    id: str
    tenant_id: str
    instance_id: str
    origin: str  # api | schedule
    status: str
    budget_credits: float
    max_duration_s: int
    max_iterations: int
    iterations: int
    spent_credits: float
    summary: dict[str, Any] | None
    error: str | None
    started_at: datetime
    ended_at: datetime | None


@dataclass(frozen=True)
class PhaseRecord:
    tenant_id: str
    run_id: str
    iteration: int
    phase: str
    status: str
    inputs: dict[str, Any]
    outputs: dict[str, Any]
    decision: str | None
    decider: str | None
    cost_credits: float
    duration_ms: float
    started_at: datetime
    ended_at: datetime


@dataclass(frozen=True)
class ActionRecord:
    id: str
    tenant_id: str
    run_id: str
    iteration: int
    name: str
    version: int
    parameters: dict[str, Any]
    planned_by: str  # model | deterministic
    status: str
    decided_by: str | None
    result: dict[str, Any] | None
    outcome: dict[str, Any] | None
    error: str | None
    attempts: int
    created_at: datetime
    updated_at: datetime
    applied_at: datetime | None
    reverted_at: datetime | None


@dataclass(frozen=True)
class ApprovalRecord:
    id: str
    tenant_id: str
    run_id: str
    action_id: str
    instance_id: str
    status: str
    requested_at: datetime
    expires_at: datetime
    decided_at: datetime | None
    decided_by: str | None
    note: str | None


@dataclass(frozen=True)
class DeadLetterRecord:
    id: str
    tenant_id: str
    run_id: str
    action_id: str
    name: str
    parameters: dict[str, Any]
    error: str
    attempts: int
    status: str
    created_at: datetime
    updated_at: datetime
    resolved_by: str | None
