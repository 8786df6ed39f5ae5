"""``/v1/ingestions`` and ``/v1/search``."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    WithJsonSchema,
    field_validator,
)

from hartonomous.api.atoms import upload_body
from hartonomous.api.auth import Reader, Writer
from hartonomous.api.deps import PlatformDep, RequestId, WorkflowClientDep
from hartonomous.api.problems import PROBLEM_JSON, PROBLEM_RESPONSES, Problem
from hartonomous.api.uploads import check_declared_length, receive
from hartonomous.domain.atoms import Modality
from hartonomous.domain.metadata import (
    FILTER_KEY_PATTERN,
    INT64_MAX,
    INT64_MIN,
    MAX_FILTER_KEYS,
    MAX_FILTER_VALUE_CHARS,
    check_filter,
)
from hartonomous.errors import UnprocessableContent
from hartonomous.knowledge.parsing import is_supported
from hartonomous.knowledge.search import Mode
from hartonomous.knowledge.store import SearchFilter
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


FilterKey = Annotated[str, StringConstraints(pattern=FILTER_KEY_PATTERN)]
FilterValue = (
    Annotated[str, Field(max_length=MAX_FILTER_VALUE_CHARS)]
    | Annotated[int, Field(ge=INT64_MIN, le=INT64_MAX)]
    | Annotated[float, Field(allow_inf_nan=False)]
    | bool
)
# Stated whole: pydantic would publish the key pattern as patternProperties, which lets any
# other key through, and the integer bounds as floats.
METADATA_FILTER_SCHEMA: dict[str, Any] = {
    "type": "object",
    "maxProperties": MAX_FILTER_KEYS,
    "propertyNames": {"pattern": FILTER_KEY_PATTERN},
    "additionalProperties": {
        "anyOf": [
            {"type": "string", "maxLength": MAX_FILTER_VALUE_CHARS},
            {"type": "integer", "minimum": INT64_MIN, "maximum": INT64_MAX},
            {"type": "number"},
            {"type": "boolean"},
        ]
    },
}


class Filters(BaseModel):
    model_config = ConfigDict(extra="forbid")

    modality: Modality | None = None
    media_type: str | None = Field(default=None, max_length=255)
    document_id: str | None = Field(default=None, max_length=36)
    metadata: (
        Annotated[dict[FilterKey, FilterValue], WithJsonSchema(METADATA_FILTER_SCHEMA)] | None
    ) = Field(
        default=None,
        max_length=MAX_FILTER_KEYS,
        description="Equality on the source document's metadata: at most "
        f"{MAX_FILTER_KEYS} keys, each a string, boolean, 64-bit integer or finite number",
    )
    created_after: datetime | None = Field(default=None, description="RFC 3339, with an offset")
    created_before: datetime | None = Field(default=None, description="RFC 3339, with an offset")

    @field_validator("created_after", "created_before")
    @classmethod
    def _utc(cls, value: datetime | None) -> datetime | None:
        """In UTC, as the store compares them: a time without an offset is ambiguous, and one
        near year 1 or 9999 may not exist in UTC (it made the store's bind fail with a 500)."""
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("a time needs its UTC offset (for example 2026-12-01T00:00:00Z)")
        try:
            return value.astimezone(UTC)
        except OverflowError as exc:
            raise ValueError("the time is out of range once in UTC") from exc

    @field_validator("metadata", mode="before")
    @classmethod
    def _bounded(cls, value: object) -> object:
        """Counted and checked before pydantic walks the items: 100,000 keys cost nothing,
        and an integer past 64 bits is refused, never turned into a float."""
        if isinstance(value, dict):
            try:
                check_filter(value)
            except UnprocessableContent as exc:
                raise ValueError(exc.detail) from exc
        return value

    def to_search_filter(self) -> SearchFilter:
        return SearchFilter(
            modality=self.modality.value if self.modality else None,
            media_type=self.media_type,
            document_id=self.document_id,
            metadata=dict(self.metadata) if self.metadata else None,
            created_after=self.created_after,
            created_before=self.created_before,
        )


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
