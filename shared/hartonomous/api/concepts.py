"""Concepts (docs/concepts.md): discovery runs, the concepts with their members and graph,
and the hourly schedule."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from hartonomous.api.auth import Reader, Writer
from hartonomous.api.deps import PlatformDep, WorkflowClientDep
from hartonomous.api.problems import PROBLEM_RESPONSES, documented
from hartonomous.concepts.discovery import K_MAX
from hartonomous.concepts.service import Related
from hartonomous.concepts.store import ConceptRow, RunRow
from hartonomous.domain.atoms import Modality

router = APIRouter(tags=["concepts"], responses=PROBLEM_RESPONSES)

Limit = Annotated[int, Query(ge=1, le=100, description="Items per page")]
Cursor = Annotated[
    str | None, Query(max_length=512, description="`next_cursor` of the previous page")
]
ConceptId = Annotated[str, Path(min_length=1, max_length=36)]
K = Annotated[
    int | None,
    Field(ge=2, le=K_MAX, description="Concepts to find; omitted: chosen by the silhouette"),
]


class ChunkModality(StrEnum):
    """The modalities whose chunks are clustered (a concept's own is not one of them)."""

    TEXT = "text"
    CODE = "code"
    DOCUMENT = "document"


ClusteredModality = Annotated[ChunkModality, Field(description="The chunks' modality")]


class StateFilter(StrEnum):
    ACTIVE = "active"
    RETIRED = "retired"
    MERGED = "merged"
    ALL = "all"


class DiscoverIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    modality: ClusteredModality = ChunkModality.TEXT
    k: K = None


class DiscoverOut(BaseModel):
    run_id: str
    instance_id: str
    status_url: str = Field(description="GET it for progress (customStatus) and the result")


@router.post(
    "/v1/concepts/discover",
    status_code=202,
    response_model=DiscoverOut,
    responses={
        **documented(402, "The credits cannot cover clustering the modality's chunks"),
        **documented(409, "A discovery of this modality is already running"),
    },
)
async def discover(
    body: DiscoverIn, principal: Writer, platform: PlatformDep, client: WorkflowClientDep
) -> JSONResponse:
    """Cluster your chunks of a modality into concepts (a workflow): each becomes a concept
    atom named by its most distinctive terms, its members linked to it. A re-run keeps the
    ids of the concepts it finds again."""
    started = await platform.concepts.start(
        client, principal.tenant_id, body.modality.value, body.k
    )
    out = DiscoverOut(
        run_id=started.run_id,
        instance_id=started.instance_id,
        status_url=f"/v1/workflows/{started.instance_id}",
    )
    return JSONResponse(out.model_dump(), status_code=202, headers={"Location": out.status_url})


class ConceptOut(BaseModel):
    id: str = Field(description="Stable across discovery runs")
    name: str = Field(description="Its three most distinctive terms (c-TF-IDF)")
    modality: str
    state: str = Field(description="active, retired (no cluster took it) or merged")
    level: int = Field(
        description="0: a cluster of chunks; 1: a broad concept, a group of level-0 concepts "
        "whose members are theirs"
    )
    broader_id: str | None = Field(
        description="Level 0: the broad concept whose group holds this one, if any"
    )
    size: int = Field(description="Members at its last run, plus chunks assigned since")
    top_terms: list[str]
    atom_id: str = Field(description="The description atom of its last run (GET its content)")
    run_id: str
    created_at: datetime
    updated_at: datetime


def concept_out(c: ConceptRow) -> ConceptOut:
    return ConceptOut(
        id=c.id, name=c.name, modality=c.modality, state=c.state, level=c.level,
        broader_id=c.broader_id, size=c.size, top_terms=c.terms, atom_id=c.atom_id,
        run_id=c.run_id, created_at=c.created_at, updated_at=c.updated_at,
    )  # fmt: skip


class ConceptPage(BaseModel):
    items: list[ConceptOut]
    next_cursor: str | None


@router.get("/v1/concepts", response_model=ConceptPage)
def list_concepts(
    principal: Reader,
    platform: PlatformDep,
    limit: Limit = 50,
    cursor: Cursor = None,
    modality: Modality | None = None,
    state: StateFilter = StateFilter.ACTIVE,
    level: Annotated[int | None, Query(ge=0, le=1, description="Only this level")] = None,
) -> ConceptPage:
    """Your concepts, newest first."""
    page = platform.concepts.page(
        principal.tenant_id,
        cursor,
        limit,
        modality.value if modality else None,
        None if state is StateFilter.ALL else state.value,
        level,
    )
    return ConceptPage(items=[concept_out(c) for c in page.items], next_cursor=page.next_cursor)


class RelatedOut(BaseModel):
    concept_id: str
    name: str
    kind: str
    confidence: float
    evidence: dict[str, Any]


class MemberOut(BaseModel):
    atom_id: str
    distance: float = Field(description="Cosine distance to the centroid (1 - cosine)")


class MemberPage(BaseModel):
    items: list[MemberOut]
    next_cursor: str | None = Field(description="Pass as members_cursor for the next page")


class NarrowerOut(BaseModel):
    concept_id: str
    name: str
    size: int


class ConceptDetail(ConceptOut):
    members: MemberPage = Field(
        description="Nearest their concept's centroid first (a broad concept's: the members "
        "of the concepts it groups)"
    )
    narrower: list[NarrowerOut] = Field(
        description="A broad concept's group: the active concepts it holds, largest first"
    )
    parents: list[RelatedOut] = Field(description="Concepts this one IS_A")
    children: list[RelatedOut] = Field(description="Concepts that IS_A this one")
    related: list[RelatedOut]
    lineage: list[RelatedOut] = Field(description="SPLIT_FROM and MERGED_INTO, either way")


def _related(items: list[Related]) -> list[RelatedOut]:
    return [RelatedOut(**r.__dict__) for r in items]


class RunOut(BaseModel):
    run_id: str
    modality: str
    status: str = Field(description="running, completed or failed")
    origin: str = Field(description="api, schedule, loop or cli")
    k_requested: int | None
    instance_id: str
    summary: dict[str, Any] | None = Field(
        description="clustered: chunks, k, k_chosen_by, silhouette, kept, created, retired, "
        "splits, merges, caught_up, timings_ms, broad, broad_kept; bound: windows, is_a, "
        "related, added, removed"
    )
    error: str | None
    started_at: datetime
    ended_at: datetime | None


@router.get("/v1/concepts/runs", response_model=list[RunOut])
def list_runs(principal: Reader, platform: PlatformDep, limit: Limit = 20) -> list[RunOut]:
    """Your latest discovery runs, newest first, with what each found."""
    return [run_out(r) for r in platform.concepts.runs(principal.tenant_id, limit)]


def run_out(r: RunRow) -> RunOut:
    return RunOut(
        run_id=r.id, modality=r.modality, status=r.status, origin=r.origin,
        k_requested=r.k_requested, instance_id=r.instance_id, summary=r.summary,
        error=r.error, started_at=r.started_at, ended_at=r.ended_at,
    )  # fmt: skip


class ScheduleIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    modality: ClusteredModality = ChunkModality.TEXT
    enabled: bool
    k: K = None


class ScheduleOut(BaseModel):
    modality: str
    enabled: bool
    k: int | None


@router.get("/v1/concepts/schedule", response_model=list[ScheduleOut])
def get_schedule(principal: Reader, platform: PlatformDep) -> list[ScheduleOut]:
    """Which modalities are rediscovered every hour."""
    return [ScheduleOut(**s) for s in platform.concepts.schedules(principal.tenant_id)]


@router.put("/v1/concepts/schedule", response_model=list[ScheduleOut])
def put_schedule(body: ScheduleIn, principal: Writer, platform: PlatformDep) -> list[ScheduleOut]:
    """Turn hourly discovery of a modality on or off (each run is metered like one asked)."""
    platform.concepts.set_schedule(principal.tenant_id, body.modality.value, body.enabled, body.k)
    return [ScheduleOut(**s) for s in platform.concepts.schedules(principal.tenant_id)]


@router.get("/v1/concepts/{concept_id}", response_model=ConceptDetail)
def get_concept(
    concept_id: ConceptId,
    principal: Reader,
    platform: PlatformDep,
    members_limit: Limit = 50,
    members_cursor: Cursor = None,
) -> ConceptDetail:
    """One concept: its members (paged), parents, children, related concepts and lineage."""
    view = platform.concepts.get(principal.tenant_id, concept_id)
    members = platform.concepts.members(
        principal.tenant_id, concept_id, members_cursor, members_limit
    )
    return ConceptDetail(
        **concept_out(view.concept).model_dump(),
        members=MemberPage(
            items=[MemberOut(atom_id=a, distance=d) for a, d in members.items],
            next_cursor=members.next_cursor,
        ),
        narrower=[NarrowerOut(concept_id=c.id, name=c.name, size=c.size) for c in view.narrower],
        parents=_related(view.parents),
        children=_related(view.children),
        related=_related(view.related),
        lineage=_related(view.lineage),
    )
