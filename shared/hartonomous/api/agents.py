"""Agents' names and versions: compile a spec, read, list, retire, pin (docs/agents.md).

A version is the SHA-256 of the compiled spec's canonical JSON: posting the same spec again
answers 200 with the version it already is, a changed one 201 with a new version. Runs are
``api/agent_runs.py``; its ``/v1/agents/runs`` routes are included before these (an agent
may never be named ``runs``).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field

from hartonomous.agents.records import AgentRecord, VersionRecord
from hartonomous.agents.spec import VERSION_PATTERN, AgentSpecIn
from hartonomous.agents.types import AgentStatus
from hartonomous.api.auth import Reader, Writer
from hartonomous.api.deps import PlatformDep
from hartonomous.api.problems import PROBLEM_RESPONSES
from hartonomous.api.problems import documented as _problem

router = APIRouter(prefix="/v1/agents", tags=["agents"], responses=PROBLEM_RESPONSES)

Name = Annotated[str, Path(min_length=1, max_length=64, description="The agent's name")]
NameOrVersion = Annotated[
    str, Path(min_length=1, max_length=64, description="A name, or a version id (64 hex)")
]
Limit = Annotated[int, Query(ge=1, le=100, description="Items per page")]
Cursor = Annotated[
    str | None, Query(max_length=512, description="`next_cursor` of the previous page")
]


# -- models -----------------------------------------------------------------------------------


class AgentOut(BaseModel):
    """A version of an agent, with where its name stands."""

    name: str
    status: AgentStatus = Field(description="active, or retired (no new runs)")
    version_id: str = Field(description="SHA-256 of the compiled spec's canonical JSON")
    latest_version: str = Field(description="The name's last compiled version")
    pinned_version: str | None = Field(description="Set: the name runs this, not the latest")
    current: bool = Field(description="Whether the name runs this version now")
    model_id: str
    model_sha256: str = Field(description="The exact model bytes the version runs")
    snapshot: int = Field(description="The knowledge watermark frozen at compilation")
    created_at: datetime = Field(description="When this version was first compiled")
    created_by: str | None
    retired_at: datetime | None
    compile_ms: float | None = Field(
        default=None, description="On POST only: the compilation's time, storing included"
    )
    spec: dict[str, Any] = Field(description="The compiled spec (what the version id hashes)")

    @classmethod
    def of(
        cls, version: VersionRecord, agent: AgentRecord, compile_ms: float | None = None
    ) -> AgentOut:
        return cls(
            name=version.name,
            status=AgentStatus(agent.status),
            version_id=version.id,
            latest_version=agent.latest_version,
            pinned_version=agent.pinned_version,
            current=agent.current_version == version.id,
            model_id=version.model_id,
            model_sha256=version.model_sha256,
            snapshot=version.snapshot,
            created_at=version.created_at,
            created_by=version.created_by,
            retired_at=agent.retired_at,
            compile_ms=compile_ms,
            spec=version.spec,
        )


class AgentSummaryOut(BaseModel):
    name: str
    status: AgentStatus
    latest_version: str
    pinned_version: str | None
    created_at: datetime
    updated_at: datetime
    retired_at: datetime | None

    @classmethod
    def of(cls, agent: AgentRecord) -> AgentSummaryOut:
        return cls.model_validate(agent, from_attributes=True)


class AgentPage(BaseModel):
    items: list[AgentSummaryOut]
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page")


class VersionOut(BaseModel):
    version_id: str
    name: str
    model_id: str
    model_sha256: str
    snapshot: int
    created_at: datetime
    created_by: str | None
    spec: dict[str, Any]

    @classmethod
    def of(cls, version: VersionRecord) -> VersionOut:
        return cls(version_id=version.id, **version.__dict__)


class VersionPage(BaseModel):
    items: list[VersionOut]
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page")


class PinIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    version_id: str = Field(pattern=VERSION_PATTERN, description="One of the name's versions")


# -- routes -----------------------------------------------------------------------------------


@router.post(
    "",
    status_code=201,
    response_model=AgentOut,
    responses={
        200: {"model": AgentOut, "description": "The spec compiled to a version held already"},
        **_problem(404, "Unknown model (or another tenant's)"),
        **_problem(409, "The model is not ready"),
        **_problem(
            422,
            "A malformed spec or rule; a tool unknown, not an agents' tool, forbidden by "
            "the tenant policy or by the constitution; a budget too small for one step",
        ),
    },
)
def create_agent(body: AgentSpecIn, principal: Writer, platform: PlatformDep) -> JSONResponse:
    """Compile the spec into an immutable version; the name now points at it (active)."""
    done = platform.agents.create(principal.tenant_id, body, by=f"key:{principal.key_id}")
    out = AgentOut.of(done.version, done.agent, done.compile_ms)
    return JSONResponse(
        out.model_dump(mode="json"),
        status_code=201 if done.created else 200,
        headers={"Location": f"/v1/agents/{done.version.id}"},
    )


@router.get("", response_model=AgentPage)
def list_agents(
    principal: Reader,
    platform: PlatformDep,
    include_retired: bool = False,
    limit: Limit = 20,
    cursor: Cursor = None,
) -> AgentPage:
    """The tenant's agent names in order; retired ones only with ``include_retired``."""
    page = platform.agents.agents(
        principal.tenant_id, limit, cursor, include_retired=include_retired
    )
    return AgentPage(
        items=[AgentSummaryOut.of(a) for a in page.items], next_cursor=page.next_cursor
    )


@router.get("/{name}/versions", response_model=VersionPage)
def list_versions(
    name: Name, principal: Reader, platform: PlatformDep, limit: Limit = 20, cursor: Cursor = None
) -> VersionPage:
    """A name's versions, newest first (retired names too: they stay for audit)."""
    page = platform.agents.versions(principal.tenant_id, name, limit, cursor)
    return VersionPage(items=[VersionOut.of(v) for v in page.items], next_cursor=page.next_cursor)


@router.get("/{name_or_version}", response_model=AgentOut)
def get_agent(name_or_version: NameOrVersion, principal: Reader, platform: PlatformDep) -> AgentOut:
    """A name's current version (pinned, else latest), or a version by its id."""
    return AgentOut.of(*platform.agents.get(principal.tenant_id, name_or_version))


@router.delete("/{name}", status_code=204, response_class=Response)
def retire_agent(name: Name, principal: Writer, platform: PlatformDep) -> Response:
    """Retire the name: no new runs; its versions and runs stay readable. Compiling it
    again re-activates it. 404 when no active name has it."""
    platform.agents.retire(principal.tenant_id, name)
    return Response(status_code=204)


@router.put(
    "/{name}/pin",
    response_model=AgentOut,
    responses=_problem(422, "Not a version of this name"),
)
def pin_agent(name: Name, body: PinIn, principal: Writer, platform: PlatformDep) -> AgentOut:
    """Run this version under the name, whatever is compiled later, until unpinned."""
    return AgentOut.of(*platform.agents.pin(principal.tenant_id, name, body.version_id))


@router.delete("/{name}/pin", response_model=AgentOut)
def unpin_agent(name: Name, principal: Writer, platform: PlatformDep) -> AgentOut:
    """Follow the latest version again."""
    return AgentOut.of(*platform.agents.pin(principal.tenant_id, name, None))
