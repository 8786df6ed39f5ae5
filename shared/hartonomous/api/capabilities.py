"""``/v1/capabilities/search``: what a tenant could build an agent from."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field, field_validator

from hartonomous.agents.capabilities import Capability, Kind
from hartonomous.api.auth import Reader
from hartonomous.api.deps import PlatformDep, RequestId
from hartonomous.api.problems import PROBLEM_RESPONSES
from hartonomous.autonomy.policy import not_a_boolean

router = APIRouter(tags=["agents"], responses=PROBLEM_RESPONSES)


class CapabilitySearchIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    query: Annotated[str, Field(min_length=1, max_length=2000)]
    k: Annotated[int, Field(ge=1, le=50)] = 10
    kinds: Annotated[
        list[Kind] | None,
        Field(
            min_length=1,
            max_length=len(Kind),
            json_schema_extra={"uniqueItems": True},
            description="The kinds to search, each once (default: all)",
        ),
    ] = None

    _k = field_validator("k", mode="before")(not_a_boolean)

    @field_validator("kinds")
    @classmethod
    def _once(cls, value: list[Kind] | None) -> list[Kind] | None:
        if value is not None and len(set(value)) != len(value):
            raise ValueError("each kind at most once")
        return value


class WhyOut(BaseModel):
    passage: str | None = Field(
        default=None, description="The matched passage (its first 300 characters)"
    )
    highlights: list[str] = Field(
        default=[], description="The query's words in the passage, marked with <mark>"
    )
    vector_score: float | None = Field(
        default=None, description="The vector search's cosine (absent for a keyword-only hit)"
    )
    keyword_score: float | None = Field(default=None, description="BM25, for knowledge")
    shared_words: list[str] = Field(
        default=[], description="The query's words in a tool's description or a model's profile"
    )


class CapabilityOut(BaseModel):
    kind: Kind
    id: str = Field(description="A model's id, a chunk's atom id, a tool's name")
    score: float = Field(
        description="Cosine between the query's embedding and the item's: one scale for "
        "every kind (a chunk's stored vector, a model's profile, a tool's description)"
    )
    title: str
    why: WhyOut
    status: str | None = Field(default=None, description="A model's status")
    document_id: str | None = Field(default=None, description="A chunk's document")
    filename: str | None = Field(default=None, description="The document's file name, if any")
    callers: list[str] | None = Field(default=None, description="A tool's: agent, loop")
    requires_approval: bool | None = Field(
        default=None, description="A tool's default when the tenant's policy does not name it"
    )

    @classmethod
    def of(cls, item: Capability) -> CapabilityOut:
        why = item.why
        return cls(
            kind=item.kind,
            id=item.id,
            score=item.score,
            title=item.title,
            why=WhyOut(
                passage=why.passage,
                highlights=list(why.highlights),
                vector_score=why.vector_score,
                keyword_score=why.keyword_score,
                shared_words=list(why.shared_words),
            ),
            status=item.status,
            document_id=item.document_id,
            filename=item.filename,
            callers=list(item.callers) if item.kind == Kind.TOOL else None,
            requires_approval=item.requires_approval,
        )


class CapabilitySearchOut(BaseModel):
    query: str
    items: list[CapabilityOut] = Field(description="Best first, at most k, all kinds together")
    kinds_unavailable: list[Kind] = Field(
        description="Kinds asked for that this deployment cannot search (none today)"
    )


@router.post("/v1/capabilities/search", response_model=CapabilitySearchOut)
def search_capabilities(
    body: CapabilitySearchIn, principal: Reader, platform: PlatformDep, request_id: RequestId
) -> CapabilitySearchOut:
    """Search the caller's models (their capability profiles, and the built-in model),
    knowledge (chunks of its documents) and the action registry's tools, ranked together by
    cosine to the query. Send ``X-Request-Id`` to make retries count once in usage."""
    found = platform.capabilities.search(
        principal.tenant_id, body.query, body.k, body.kinds, request_id=request_id
    )
    return CapabilitySearchOut(
        query=found.query,
        items=[CapabilityOut.of(c) for c in found.items],
        kinds_unavailable=found.kinds_unavailable,
    )
