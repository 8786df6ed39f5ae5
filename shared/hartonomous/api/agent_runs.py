"""Agent runs over HTTP: start, list, read (steps, violations, approvals, receipt), cancel,
and a Server-Sent Events stream of a run's steps as they are recorded (docs/agents.md).

Included before the agents' own router: ``/v1/agents/runs`` is this router's, never an
agent's name (the spec refuses the name ``runs``).
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Annotated, Any

import anyio
from anyio import to_thread
from fastapi import APIRouter, Header, Path, Query
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, field_validator

from hartonomous.agents.records import (
    AgentApprovalRecord,
    AgentRunRecord,
    StepRecord,
    ViolationRecord,
)
from hartonomous.agents.runs import Progress
from hartonomous.agents.spec import NAME_PATTERN
from hartonomous.agents.types import RunStatus, StepStatus
from hartonomous.api.auth import Reader, Writer
from hartonomous.api.deps import PlatformDep, WorkflowClientDep, WorkflowsIfAny
from hartonomous.api.problems import (
    PROBLEM_RESPONSES,
    UNAVAILABLE,
)
from hartonomous.api.problems import documented as _problem
from hartonomous.autonomy.policy import not_a_boolean
from hartonomous.billing.service import generation_estimate

router = APIRouter(tags=["agents"], responses=PROBLEM_RESPONSES)

RunId = Annotated[str, Path(min_length=1, max_length=100)]
NameOrVersion = Annotated[
    str, Path(min_length=1, max_length=64, description="An agent's name, or a version id")
]
Limit = Annotated[int, Query(ge=1, le=100, description="Items per page")]
Cursor = Annotated[
    str | None, Query(max_length=512, description="`next_cursor` of the previous page")
]
AgentName = Annotated[str | None, Query(pattern=NAME_PATTERN, description="Only this agent's runs")]
EVENT_ID = r"^[0-9]{1,9}:(model|tool)$"
LastEventId = Annotated[
    str,  # not nullable: a client that sends none simply omits it
    Header(
        pattern=EVENT_ID,
        description="The `id` of the last event received: the stream resumes after it",
    ),
]

POLL_S = 0.5  # how often a stream looks for new steps
HEARTBEAT_S = 15.0  # a comment line when nothing else was sent, so proxies keep it open
STREAM_LIMIT_S = 30 * 60  # one connection's most; the client reconnects with Last-Event-ID
RETRY_MS = 1000  # what EventSource waits before it reconnects
# A step in one of these will change again (a human decides; an approved tool then runs):
# its events carry no id, so a reconnection sends it again as it is then.
TRANSIENT = {StepStatus.AWAITING_APPROVAL.value, StepStatus.APPROVED.value}


# -- models -----------------------------------------------------------------------------------


class AgentRunIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    input: str = Field(min_length=1, max_length=8000, description="What the agent is asked")
    seed: int | None = Field(
        default=None, ge=0, le=2**31 - 1, description="The model's seed (same seed, same steps)"
    )

    _seed = field_validator("seed", mode="before")(not_a_boolean)


class AgentRunStarted(BaseModel):
    run_id: str
    instance_id: str = Field(description="The run's workflow (GET /v1/workflows/{id})")
    status_url: str = Field(description="GET it for the run's status and its steps")


class AgentRunOut(BaseModel):
    id: str
    agent_name: str
    version_id: str = Field(description="The compiled version the run obeys")
    instance_id: str
    status: str = Field(
        description="running, answered, violated, steps_exhausted, budget_exhausted, "
        "duration_exhausted, cancelled or failed"
    )
    input: str
    seed: int | None
    budget_credits: float = Field(description="The credit cap: budget and max_credits rules")
    max_steps: int = Field(description="The step cap: budget and max_steps rules")
    max_duration_s: int
    step_count: int = Field(description="Steps taken so far")
    spent_credits: float
    answer: str | None
    answer_atom_id: str | None
    error: str | None = Field(description="Why it failed, or who cancelled it")
    started_at: datetime
    ended_at: datetime | None

    @classmethod
    def of(cls, run: AgentRunRecord) -> AgentRunOut:
        values = {k: v for k, v in vars(run).items() if k in AgentRunOut.model_fields}
        return AgentRunOut(**values, input=run.input_text, step_count=run.steps)


class StepOut(BaseModel):
    """One row of a run's audit: the model's choice, or the platform's decision on a tool
    call and its result."""

    id: str
    step: int
    kind: str = Field(description="model or tool")
    name: str | None = Field(description="The tool")
    arguments: dict[str, Any] | None
    status: str
    decided_by: str | None = Field(description="The rule or key that decided a tool call")
    receipt_id: str | None = Field(description="A model step's generation receipt")
    result: dict[str, Any] | None
    cost_credits: float
    started_at: datetime
    ended_at: datetime | None

    @classmethod
    def of(cls, step: StepRecord) -> StepOut:
        return cls.model_validate(step, from_attributes=True)


class ViolationOut(BaseModel):
    step: int
    rule_type: str
    detail: str
    outcome: str = Field(description="end (the run ended) or approval (a human decides)")
    created_at: datetime

    @classmethod
    def of(cls, violation: ViolationRecord) -> ViolationOut:
        return cls.model_validate(violation, from_attributes=True)


class RunApprovalOut(BaseModel):
    id: str = Field(description="Decide it at /v1/approvals/{id}")
    step_id: str
    reason: str
    status: str
    requested_at: datetime
    expires_at: datetime
    decided_at: datetime | None
    decided_by: str | None
    comment: str | None

    @classmethod
    def of(cls, approval: AgentApprovalRecord) -> RunApprovalOut:
        values = {k: v for k, v in vars(approval).items() if k in cls.model_fields}
        return cls(**values, comment=approval.note)


class AgentRunDetailOut(AgentRunOut):
    steps: list[StepOut] = Field(description="In order: each step's model row, then its tool")
    violations: list[ViolationOut]
    approvals: list[RunApprovalOut]
    receipt: dict[str, Any] | None = Field(
        description="The run's receipt (its steps' receipts in order); set once it ended"
    )


class AgentRunPage(BaseModel):
    items: list[AgentRunOut]
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page")


# -- routes -----------------------------------------------------------------------------------


@router.post(
    "/v1/agents/{name_or_version}/runs",
    status_code=202,
    response_model=AgentRunStarted,
    responses={
        **_problem(409, "The agent's model is gone, not ready, or has other bytes"),
        **_problem(410, "The agent's name is retired"),
        **UNAVAILABLE,
    },
)
async def start_run(
    name_or_version: NameOrVersion,
    body: AgentRunIn,
    principal: Writer,
    platform: PlatformDep,
    client: WorkflowClientDep,
) -> JSONResponse:
    """Run the agent's current version (or the version named) on ``input``: a durable
    workflow that loops model step, constitution check, approval, tool, until an answer or
    a cap. 422 when the agent's credit cap cannot pay one step, 402 when the tenant's credits
    cannot."""
    step = generation_estimate(
        platform.settings.inference_context_tokens, platform.settings.generation_max_tokens, 5
    )
    await to_thread.run_sync(platform.credits.require, principal.tenant_id, step, "an agent run")
    run = await platform.agent_runs.start(
        client, principal.tenant_id, name_or_version, body.input, body.seed,
        by=f"key:{principal.key_id}",
    )  # fmt: skip
    out = AgentRunStarted(
        run_id=run.id, instance_id=run.instance_id, status_url=f"/v1/agents/runs/{run.id}"
    )
    return JSONResponse(out.model_dump(), status_code=202, headers={"Location": out.status_url})


@router.get("/v1/agents/runs", response_model=AgentRunPage)
def list_runs(
    principal: Reader,
    platform: PlatformDep,
    limit: Limit = 20,
    cursor: Cursor = None,
    agent: AgentName = None,
) -> AgentRunPage:
    """The tenant's agent runs, newest first."""
    page = platform.agent_runs.runs(principal.tenant_id, limit, cursor, agent)
    return AgentRunPage(items=[AgentRunOut.of(r) for r in page.items], next_cursor=page.next_cursor)


@router.get("/v1/agents/runs/{run_id}", response_model=AgentRunDetailOut)
def get_run(run_id: RunId, principal: Reader, platform: PlatformDep) -> AgentRunDetailOut:
    """A run with its steps in order, the rules it broke, its approval requests and, once
    it ended, its receipt."""
    detail = platform.agent_runs.run(principal.tenant_id, run_id)
    return AgentRunDetailOut(
        **AgentRunOut.of(detail.run).model_dump(),
        steps=[StepOut.of(s) for s in detail.steps],
        violations=[ViolationOut.of(v) for v in detail.violations],
        approvals=[RunApprovalOut.of(a) for a in detail.approvals],
        receipt=detail.run.receipt,
    )


@router.post(
    "/v1/agents/runs/{run_id}/cancel",
    response_model=AgentRunOut,
    responses=_problem(409, "The run has ended"),
)
async def cancel_run(
    run_id: RunId, principal: Writer, platform: PlatformDep, client: WorkflowsIfAny
) -> AgentRunOut:
    """Stop a running run: it ends ``cancelled`` with its receipt (its pending approvals
    expire), then its workflow is terminated."""
    run = await platform.agent_runs.cancel(
        client, principal.tenant_id, run_id, by=f"key:{principal.key_id}"
    )
    return AgentRunOut.of(run)


@router.get(
    "/v1/agents/runs/{run_id}/events",
    response_class=StreamingResponse,
    responses={
        200: {
            "content": {"text/event-stream": {"schema": {"type": "string"}}},
            "description": "`event: step` per step row (JSON data, `id: <step>:<kind>` once "
            "it is final), then `event: end` with the run's status; at most 30 minutes per "
            "connection, then reconnect with Last-Event-ID",
        }
    },
)
async def run_events(
    run_id: RunId,
    principal: Reader,
    platform: PlatformDep,
    last_event_id: LastEventId = "",
) -> StreamingResponse:
    """The run's steps as they are recorded, as Server-Sent Events."""
    service = platform.agent_runs
    first = await to_thread.run_sync(service.progress, principal.tenant_id, run_id)  # 404

    async def look() -> Progress:
        return await to_thread.run_sync(service.progress, principal.tenant_id, run_id)

    return StreamingResponse(
        _stream(first, look, StepFeed(last_event_id or None)),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )


# -- the event stream -------------------------------------------------------------------------


def _position(step: int, kind: str) -> tuple[int, int]:
    return step, 0 if kind == "model" else 1


class StepFeed:
    """Which step rows to send, and under which id. A row is sent when first seen and again
    whenever its status changes; its id is set only while it and every row before it are
    final, so ``Last-Event-ID`` always names a position whose rows need no resending."""

    def __init__(self, last_event_id: str | None) -> None:
        self._after: tuple[int, int] | None = None
        if last_event_id:
            step, kind = last_event_id.split(":")
            self._after = _position(int(step), kind)
        self._sent: dict[tuple[int, int], str] = {}

    def frames(self, steps: list[StepRecord]) -> list[str]:
        out, settled = [], True
        for s in steps:
            position = _position(s.step, s.kind)
            if self._after is not None and position <= self._after:
                continue
            settled = settled and s.status not in TRANSIENT
            if self._sent.get(position) == s.status:
                continue
            self._sent[position] = s.status
            data = StepOut.of(s).model_dump(mode="json")
            out.append(_sse("step", data, f"{s.step}:{s.kind}" if settled else None))
        return out


def _sse(event: str, data: Any, event_id: str | None = None) -> str:
    head = f"id: {event_id}\n" if event_id is not None else ""
    return f"{head}event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"


async def _stream(progress: Progress, look: Any, feed: StepFeed) -> AsyncIterator[str]:
    """Poll until the run ends (then ``end``) or the connection's time is up (then just
    close: the client reconnects). Cancelled, as a whole, when the client goes away."""
    deadline = time.monotonic() + STREAM_LIMIT_S
    quiet_since = time.monotonic()
    yield f"retry: {RETRY_MS}\n\n"
    while True:
        frames = feed.frames(progress.steps)
        for frame in frames:
            yield frame
        run = progress.run
        if run.status != RunStatus.RUNNING:
            end = {"run_id": run.id, "status": run.status, "steps": run.steps,
                   "spent_credits": run.spent_credits, "error": run.error,
                   "ended_at": run.ended_at.isoformat() if run.ended_at else None}  # fmt: skip
            yield _sse("end", end)
            return
        now = time.monotonic()
        if frames:
            quiet_since = now
        elif now - quiet_since >= HEARTBEAT_S:
            yield ": keep-alive\n\n"
            quiet_since = now
        if now >= deadline:
            return
        await anyio.sleep(min(POLL_S, max(deadline - now, 0)))
        progress = await look()
