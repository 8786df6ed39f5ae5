"""The governed loop's API: the action registry, the tenant's policy, runs and their audit,
approvals and dead letters (docs/autonomy.md).

Deciding, changing the policy, starting runs and handling dead letters need an admin key:
they spend credits and change what the platform does to the tenant's data. The approver is
always the calling key, never a field of the body.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from anyio import to_thread
from fastapi import APIRouter, Path, Query
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, field_validator

from hartonomous.agents.records import StepRecord
from hartonomous.agents.runs import AgentApprovalDetail, AnyApproval
from hartonomous.api.auth import Admin, Reader
from hartonomous.api.deps import PlatformDep, WorkflowClientDep, WorkflowsIfAny
from hartonomous.api.problems import (
    PROBLEM_RESPONSES,
    UNAVAILABLE,
)
from hartonomous.api.problems import documented as _problem
from hartonomous.autonomy.policy import Policy, not_a_boolean
from hartonomous.autonomy.records import ActionRecord, DeadLetterRecord, PhaseRecord, RunRecord
from hartonomous.autonomy.types import ApprovalStatus, DeadLetterStatus
from hartonomous.billing.service import generation_estimate
from hartonomous.bootstrap import Platform
from hartonomous.ports import WorkflowClient
from hartonomous.services.tenants import Principal

router = APIRouter(tags=["autonomy"], responses=PROBLEM_RESPONSES)

Id = Annotated[str, Path(min_length=1, max_length=100)]
Limit = Annotated[int, Query(ge=1, le=100, description="Items per page")]
Cursor = Annotated[
    str | None, Query(max_length=512, description="`next_cursor` of the previous page")
]


# -- models -----------------------------------------------------------------------------------


class ActionSpecOut(BaseModel):
    name: str
    version: int
    description: str
    parameters: dict[str, Any] = Field(description="JSON schema (2020-12) of its parameters")
    scope: str = Field(
        description="The scope a key needs to approve it; one the policy approves itself "
        "runs under that policy, which only an admin key sets"
    )
    reversible: bool
    reversal: str = Field(description="How it is undone, or why it cannot be")
    cost_estimate_credits: float = Field(description="What the budget reserves before Act")
    metric: str | None = Field(
        description="What Learn recomputes to judge it (higher is better); null for a tool"
    )
    addresses: str | None = Field(
        description="The kind of problem Analyze finds that it fixes; null for a tool"
    )
    callers: list[Literal["loop", "agent"]] = Field(
        description="Who may run it: the autonomous loop, or agents (compiled as a tool)"
    )
    default_requires_approval: bool = Field(
        description="What a policy that does not name it says: writes wait for a human"
    )


class RunIn(BaseModel):
    """Limits of this run; each unset one is the policy's budget default."""

    model_config = ConfigDict(extra="forbid")

    budget_credits: float | None = Field(
        default=None, gt=0, le=10_000, description="Credits to spend"
    )
    max_duration_s: int | None = Field(
        default=None, gt=0, le=30 * 24 * 3600, description="Wall time, in seconds"
    )
    max_iterations: int | None = Field(
        default=None, ge=1, le=100, description="Analyze-to-Learn iterations"
    )

    _numbers = field_validator("budget_credits", "max_duration_s", "max_iterations", mode="before")(
        not_a_boolean
    )


class RunStarted(BaseModel):
    run_id: str
    instance_id: str = Field(description="The run's workflow (GET /v1/workflows/{id})")
    status_url: str = Field(description="GET it for the run's status and its phases")


class RunOut(BaseModel):
    id: str
    instance_id: str
    origin: str = Field(description="api or schedule")
    status: str = Field(
        description="running, completed, nothing_to_do, budget_exhausted, "
        "duration_exhausted, stopped, failed or terminated"
    )
    budget_credits: float
    max_duration_s: int
    max_iterations: int
    iterations: int = Field(description="Iterations finished so far")
    spent_credits: float
    summary: dict[str, Any] | None
    error: str | None
    started_at: datetime
    ended_at: datetime | None

    @classmethod
    def of(cls, run: RunRecord) -> RunOut:
        return cls.model_validate(run, from_attributes=True)


class PhaseOut(BaseModel):
    """One row of the audit: a phase of one iteration."""

    iteration: int
    phase: str = Field(description="analyze, hypothesize, approval, act or learn")
    status: str
    inputs: dict[str, Any]
    outputs: dict[str, Any]
    decision: str | None
    decider: str | None = Field(description="Who or which rule decided: key:<id>, policy:...")
    cost_credits: float
    duration_ms: float
    started_at: datetime
    ended_at: datetime

    @classmethod
    def of(cls, phase: PhaseRecord) -> PhaseOut:
        return cls.model_validate(phase, from_attributes=True)


class ActionOut(BaseModel):
    """A typed action a run planned, with its decision, execution and outcome."""

    id: str
    run_id: str
    iteration: int
    name: str
    version: int
    parameters: dict[str, Any]
    planned_by: str = Field(description="model or deterministic")
    status: str
    decided_by: str | None
    result: dict[str, Any] | None
    outcome: dict[str, Any] | None = Field(description="Learn's before and after")
    error: str | None
    attempts: int
    created_at: datetime
    updated_at: datetime
    applied_at: datetime | None
    reverted_at: datetime | None

    @classmethod
    def of(cls, action: ActionRecord) -> ActionOut:
        return cls.model_validate(action, from_attributes=True)


class RunDetailOut(RunOut):
    phases: list[PhaseOut] = Field(description="The audit, in order")
    actions: list[ActionOut]


class RunPage(BaseModel):
    items: list[RunOut]
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page")


class ApprovalActionOut(BaseModel):
    id: str
    name: str
    parameters: dict[str, Any]
    planned_by: str
    status: str


class ApprovalStepOut(BaseModel):
    """The agent's step that waits: the tool call (or the answer) and why it is gated."""

    run_id: str = Field(description="The agent run (GET /v1/agents/runs/{id})")
    step: int
    kind: str = Field(description="tool (a gated tool call) or model (a gated answer)")
    tool: str | None
    arguments: dict[str, Any] | None
    reason: str = Field(description="The rule or flag that asks for a human")
    status: str
    answer: str | None = Field(
        default=None, description="A gated answer: the text a decision would release"
    )
    citations: list[str] | None = Field(default=None, description="A gated answer's citations")


class ApprovalOut(BaseModel):
    id: str
    kind: Literal["loop", "agent"] = Field(
        description="loop: an autonomy run's action; agent: an agent run's step"
    )
    run_id: str
    action_id: str | None = Field(description="The loop's action; null for an agent's request")
    instance_id: str = Field(description="The run's workflow, which waits for the decision")
    status: ApprovalStatus
    requested_at: datetime
    expires_at: datetime
    decided_at: datetime | None
    decided_by: str | None = Field(description="key:<api key id>, or timer when it expired")
    comment: str | None
    action: ApprovalActionOut | None = Field(description="The loop's action; null for an agent's")
    step: ApprovalStepOut | None = Field(
        default=None, description="The agent's step; null for the loop's"
    )

    @classmethod
    def of(cls, detail: AnyApproval) -> ApprovalOut:
        if isinstance(detail, AgentApprovalDetail):
            return cls.of_agent(detail)
        a, action = detail.approval, detail.action
        return cls(
            id=a.id,
            kind="loop",
            run_id=a.run_id,
            action_id=a.action_id,
            instance_id=a.instance_id,
            status=ApprovalStatus(a.status),
            requested_at=a.requested_at,
            expires_at=a.expires_at,
            decided_at=a.decided_at,
            decided_by=a.decided_by,
            comment=a.note,
            action=ApprovalActionOut.model_validate(action, from_attributes=True)
            if action
            else None,
        )

    @classmethod
    def of_agent(cls, detail: AgentApprovalDetail) -> ApprovalOut:
        a, step = detail.approval, detail.step
        return cls(
            id=a.id,
            kind="agent",
            run_id=a.run_id,
            action_id=None,
            instance_id=a.instance_id,
            status=ApprovalStatus(a.status),
            requested_at=a.requested_at,
            expires_at=a.expires_at,
            decided_at=a.decided_at,
            decided_by=a.decided_by,
            comment=a.note,
            action=None,
            step=_step_out(a.run_id, a.reason, step) if step else None,
        )


def _step_out(run_id: str, reason: str, step: StepRecord) -> ApprovalStepOut:
    result = step.result or {} if step.kind == "model" else {}
    return ApprovalStepOut(
        run_id=run_id, step=step.step, kind=step.kind, tool=step.name,
        arguments=step.arguments, reason=reason, status=step.status,
        answer=result.get("answer"), citations=result.get("citations"),
    )  # fmt: skip


class ApprovalPage(BaseModel):
    items: list[ApprovalOut]
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page")


class DecisionIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    comment: str | None = Field(default=None, max_length=1000, description="Why, for the audit")


class DeadLetterOut(BaseModel):
    id: str
    run_id: str
    action_id: str
    name: str
    parameters: dict[str, Any]
    error: str
    attempts: int
    status: DeadLetterStatus
    created_at: datetime
    updated_at: datetime
    resolved_by: str | None

    @classmethod
    def of(cls, letter: DeadLetterRecord) -> DeadLetterOut:
        return cls.model_validate(letter, from_attributes=True)


class DeadLetterPage(BaseModel):
    items: list[DeadLetterOut]
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page")


class RetryStarted(BaseModel):
    instance_id: str
    status_url: str = Field(description="GET it for the retry's progress and result")


# -- the registry and the policy --------------------------------------------------------------


@router.get("/v1/actions", response_model=list[ActionSpecOut])
def list_actions(principal: Reader, platform: PlatformDep) -> list[ActionSpecOut]:
    """Every action the loop and agents may run; any other name is refused before anything
    runs."""
    return [ActionSpecOut.model_validate(a) for a in platform.autonomy.actions_registry()]


@router.get("/v1/policy", response_model=Policy)
def get_policy(principal: Admin, platform: PlatformDep) -> Policy:
    """The tenant's policy, defaults filled in (schedule off, every action needs approval)."""
    return platform.autonomy.policy(principal.tenant_id)


@router.put("/v1/policy", response_model=Policy, responses=UNAVAILABLE)
async def put_policy(
    body: Policy,
    principal: Admin,
    platform: PlatformDep,
    client: WorkflowsIfAny,
) -> Policy:
    """Replace the policy; the tenant's schedule starts or stops at once (503 to turn it
    on where no workflows run)."""
    return await platform.autonomy.put_policy(
        client, principal.tenant_id, body, by=f"key:{principal.key_id}"
    )


# -- runs -------------------------------------------------------------------------------------


@router.post(
    "/v1/autonomy/runs",
    status_code=202,
    response_model=RunStarted,
    responses={**_problem(409, "A run is active for this tenant"), **UNAVAILABLE},
)
async def start_run(
    principal: Admin, platform: PlatformDep, client: WorkflowClientDep, body: RunIn | None = None
) -> JSONResponse:
    """Start a run of the loop: Analyze, Hypothesize, Approval, Act, Learn, per iteration."""
    limits = body or RunIn()
    # Refused before it starts when the credits cannot pay its first plan (a model call).
    step = generation_estimate(
        platform.settings.inference_context_tokens, platform.settings.generation_max_tokens, 0
    )
    await run_in_threadpool(platform.credits.require, principal.tenant_id, step, "a run")
    run = await platform.autonomy.start_run(
        client,
        principal.tenant_id,
        budget_credits=limits.budget_credits,
        max_duration_s=limits.max_duration_s,
        max_iterations=limits.max_iterations,
    )
    out = RunStarted(
        run_id=run.id, instance_id=run.instance_id, status_url=f"/v1/autonomy/runs/{run.id}"
    )
    return JSONResponse(out.model_dump(), status_code=202, headers={"Location": out.status_url})


@router.get("/v1/autonomy/runs", response_model=RunPage)
def list_runs(
    principal: Reader, platform: PlatformDep, limit: Limit = 20, cursor: Cursor = None
) -> RunPage:
    """The tenant's runs, newest first."""
    page = platform.autonomy.runs(principal.tenant_id, limit, cursor)
    return RunPage(items=[RunOut.of(r) for r in page.items], next_cursor=page.next_cursor)


@router.get("/v1/autonomy/runs/{run_id}", response_model=RunDetailOut)
def get_run(run_id: Id, principal: Reader, platform: PlatformDep) -> RunDetailOut:
    """A run with its audit (one row per phase) and the actions it planned."""
    detail = platform.autonomy.run(principal.tenant_id, run_id)
    return RunDetailOut(
        **RunOut.of(detail.run).model_dump(),
        phases=[PhaseOut.of(p) for p in detail.phases],
        actions=[ActionOut.of(a) for a in detail.actions],
    )


# -- approvals --------------------------------------------------------------------------------


@router.get("/v1/approvals", response_model=ApprovalPage)
def list_approvals(
    principal: Reader,
    platform: PlatformDep,
    status: ApprovalStatus | None = None,
    limit: Limit = 20,
    cursor: Cursor = None,
) -> ApprovalPage:
    """Approval requests of the loop's actions and agents' steps, newest first."""
    page = platform.agent_runs.approvals(
        principal.tenant_id, status.value if status else None, limit, cursor
    )
    return ApprovalPage(items=[ApprovalOut.of(a) for a in page.items], next_cursor=page.next_cursor)


@router.get("/v1/approvals/{approval_id}", response_model=ApprovalOut)
def get_approval(approval_id: Id, principal: Reader, platform: PlatformDep) -> ApprovalOut:
    return ApprovalOut.of(platform.agent_runs.approval(principal.tenant_id, approval_id))


DECISION_RESPONSES = {**_problem(409, "Not pending, or expired"), **UNAVAILABLE}


@router.post(
    "/v1/approvals/{approval_id}/approve",
    response_model=ApprovalOut,
    responses=DECISION_RESPONSES,
)
async def approve(
    approval_id: Id,
    principal: Admin,
    platform: PlatformDep,
    client: WorkflowClientDep,
    body: DecisionIn | None = None,
) -> ApprovalOut:
    """Approve the action (or the agent's step); its run executes it. The approver is the
    calling key."""
    return await _decide(platform, client, principal, approval_id, True, body)


@router.post(
    "/v1/approvals/{approval_id}/reject",
    response_model=ApprovalOut,
    responses=DECISION_RESPONSES,
)
async def reject(
    approval_id: Id,
    principal: Admin,
    platform: PlatformDep,
    client: WorkflowClientDep,
    body: DecisionIn | None = None,
) -> ApprovalOut:
    """Reject the action (or the agent's step); it is never executed."""
    return await _decide(platform, client, principal, approval_id, False, body)


async def _decide(
    platform: Platform,
    client: WorkflowClient,
    principal: Principal,
    approval_id: str,
    approve: bool,
    body: DecisionIn | None,
) -> ApprovalOut:
    note = body.comment if body else None
    tenant_id = principal.tenant_id
    agent = await platform.agent_runs.decide(
        client, tenant_id, approval_id, approve, principal, note
    )
    if agent is not None:
        return ApprovalOut.of_agent(agent)
    decided = await platform.autonomy.decide(
        client, tenant_id, approval_id, approve, principal, note
    )
    return ApprovalOut.of(decided)


# -- dead letters -----------------------------------------------------------------------------


@router.get("/v1/autonomy/dead-letters", response_model=DeadLetterPage)
async def list_dead_letters(
    principal: Reader,
    platform: PlatformDep,
    client: WorkflowsIfAny,
    status: DeadLetterStatus | None = None,
    limit: Limit = 20,
    cursor: Cursor = None,
) -> DeadLetterPage:
    """Actions that still failed after their retries: input, error, attempts. A letter
    whose retry ended without settling it shows parked again."""
    await platform.autonomy.park_stale_retries(client, principal.tenant_id)
    page = await to_thread.run_sync(
        platform.autonomy.dead_letters,
        principal.tenant_id,
        status.value if status else None,
        limit,
        cursor,
    )
    return DeadLetterPage(
        items=[DeadLetterOut.of(d) for d in page.items], next_cursor=page.next_cursor
    )


@router.get("/v1/autonomy/dead-letters/{letter_id}", response_model=DeadLetterOut)
async def get_dead_letter(
    letter_id: Id, principal: Reader, platform: PlatformDep, client: WorkflowsIfAny
) -> DeadLetterOut:
    await platform.autonomy.park_stale_retries(client, principal.tenant_id, letter_id)
    letter = await to_thread.run_sync(platform.autonomy.dead_letter, principal.tenant_id, letter_id)
    return DeadLetterOut.of(letter)


@router.post(
    "/v1/autonomy/dead-letters/{letter_id}/retry",
    status_code=202,
    response_model=RetryStarted,
    responses={**_problem(409, "Not parked"), **UNAVAILABLE},
)
async def retry_dead_letter(
    letter_id: Id, principal: Admin, platform: PlatformDep, client: WorkflowClientDep
) -> JSONResponse:
    """Run the parked action again, in a new workflow (with its retries)."""
    instance_id = await platform.autonomy.retry_dead_letter(
        client, principal.tenant_id, letter_id, by=f"key:{principal.key_id}"
    )
    out = RetryStarted(instance_id=instance_id, status_url=f"/v1/workflows/{instance_id}")
    return JSONResponse(out.model_dump(), status_code=202, headers={"Location": out.status_url})


@router.post(
    "/v1/autonomy/dead-letters/{letter_id}/discard",
    response_model=DeadLetterOut,
    responses=_problem(409, "Not parked"),
)
async def discard_dead_letter(
    letter_id: Id, principal: Admin, platform: PlatformDep, client: WorkflowsIfAny
) -> DeadLetterOut:
    """Give the parked action up for good."""
    letter = await platform.autonomy.discard_dead_letter(
        client, principal.tenant_id, letter_id, by=f"key:{principal.key_id}"
    )
    return DeadLetterOut.of(letter)
