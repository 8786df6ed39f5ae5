"""``/v1/ingestions`` and ``/v1/search``."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
)

from hartonomous.api.atoms import upload_body
from hartonomous.api.auth import Reader, Writer
from hartonomous.api.deps import PlatformDep, RequestId, WorkflowClientDep
from hartonomous.api.problems import PROBLEM_JSON, PROBLEM_RESPONSES, Problem
from hartonomous.api.uploads import check_declared_length, receive
from hartonomous.billing.service import search_estimate
from hartonomous.errors import UnprocessableContent
from hartonomous.knowledge.filters import Filters
from hartonomous.knowledge.parsing import is_supported
from hartonomous.knowledge.search import Mode
from hartonomous.knowledge.uploads import start_ingestion

router = APIRouter(tags=["knowledge"], responses=PROBLEM_RESPONSES)
# What ingestion parses, by media type (JSON documents and source code too: by their type or
# their file's extension; application/json is left out here because a JSON schema would read
# as a JSON body, which this is not).
INGESTIBLE = ("text/plain", "text/markdown", "text/html", "application/pdf")


class IngestionOut(BaseModel):
    atom_id: str
    instance_id: str
    status_url: str = Field(description="GET it for progress (customStatus) and the result")
    deduplicated: bool


@router.post(
    "/v1/ingestions",
    status_code=202,
    response_model=IngestionOut,
    openapi_extra=upload_body(INGESTIBLE),
    responses={413: {"model": Problem, "content": {PROBLEM_JSON: {}}, "description": "Too large"}},
)
async def create_ingestion(
    request: Request, principal: Writer, platform: PlatformDep, client: WorkflowClientDep
) -> JSONResponse:
    """Store a document as an atom and start its ingestion workflow."""
    check_declared_length(request, platform.settings.max_upload_bytes)
    await run_in_threadpool(
        platform.credits.require, principal.tenant_id, search_estimate(), "an ingestion"
    )
    upload = await run_in_threadpool(platform.atoms.begin_upload)
    body = await receive(request, upload)
    filename = body.metadata.get("filename") if isinstance(body.metadata, dict) else None
    if not is_supported(body.media_type or "", filename):
        upload.abort()
        raise UnprocessableContent(
            f"documents of type {body.media_type!r} cannot be ingested; send text, Markdown, "
            "HTML, JSON, PDF or source code (or name the file so its extension says)"
        )
    stored = await run_in_threadpool(
        lambda: platform.atoms.store(
            tenant_id=principal.tenant_id,
            upload=upload,
            media_type=body.media_type,
            metadata=body.metadata,
        )
    )
    started = await start_ingestion(platform, client, principal.tenant_id, stored)
    out = IngestionOut(
        atom_id=stored.atom.id,
        instance_id=started.instance_id,
        status_url=f"/v1/workflows/{started.instance_id}",
        deduplicated=stored.deduplicated,
    )
    return JSONResponse(out.model_dump(), status_code=202, headers={"Location": out.status_url})


class SearchIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    query: Annotated[str, Field(min_length=1, max_length=2000)]
    k: Annotated[int, Field(ge=1, le=100)] = 10
    mode: Mode = Mode.HYBRID
    filters: Filters = Filters()


class SearchHit(BaseModel):
    atom_id: str
    score: float
    rank: int
    text: str
    document_id: str | None
    ordinal: int | None
    start: int | None = Field(description="Character offset of the chunk in its document")
    end: int | None
    highlights: list[str] = Field(description="Keyword matches marked with <mark>")
    vector_score: float | None = None
    keyword_score: float | None = None
    lifted_by: str | None = Field(
        default=None,
        description="The learned association (docs/autonomy.md) that put this result first",
    )


class SearchOut(BaseModel):
    query: str
    mode: Mode
    results: list[SearchHit]


@router.post("/v1/search", response_model=SearchOut)
def search(
    body: SearchIn, principal: Reader, platform: PlatformDep, request_id: RequestId
) -> SearchOut:
    """Search the caller's knowledge by meaning, by words, or both (reciprocal rank fusion).
    Send ``X-Request-Id`` to make retries count once in usage."""
    platform.credits.require(principal.tenant_id, search_estimate(), "a search")
    results = platform.knowledge.get().search.search(
        request_id=request_id,
        tenant_id=principal.tenant_id,
        query=body.query,
        k=body.k,
        mode=body.mode,
        flt=body.filters.to_search_filter(),
    )
    return SearchOut(
        query=body.query,
        mode=body.mode,
        results=[SearchHit(**r.__dict__) for r in results],
    )


class Gap(BaseModel):
    query: str
    mode: str
    best_score: float | None
    created_at: datetime


@router.get("/v1/knowledge-gaps", response_model=list[Gap])
def knowledge_gaps(principal: Reader, platform: PlatformDep) -> list[Gap]:
    """Recent searches whose best answer scored under the threshold."""
    return [Gap(query=g.query, mode=g.mode, best_score=g.best_score, created_at=g.created_at)
            for g in platform.gaps.recent(principal.tenant_id)]  # fmt: skip
