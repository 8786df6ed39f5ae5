"""``/v1/atoms``: store, read, stream, list and delete atoms."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, Field

from hartonomous.api.auth import Reader, Writer
from hartonomous.api.deps import PlatformDep
from hartonomous.api.problems import PROBLEM_JSON, PROBLEM_RESPONSES, Problem
from hartonomous.api.ranges import CONTENT_RESPONSES, content_response
from hartonomous.api.uploads import check_declared_length, media_type_of, receive
from hartonomous.domain.atoms import MEDIA_TYPE_PATTERN, Atom, Modality

router = APIRouter(prefix="/v1/atoms", tags=["atoms"], responses=PROBLEM_RESPONSES)


class AtomOut(BaseModel):
    id: str
    sha256: str
    size: int
    media_type: str
    modality: Modality
    metadata: dict[str, Any]
    created_at: datetime

    @classmethod
    def of(cls, atom: Atom) -> AtomOut:
        return cls.model_validate(atom, from_attributes=True)


class StoredAtomOut(AtomOut):
    deduplicated: bool = Field(
        description="True when this tenant already held these bytes: the existing atom is returned"
    )


class AtomPageOut(BaseModel):
    items: list[AtomOut]
    next_cursor: str | None = Field(
        description="Pass as `cursor` for the next page; null at the end"
    )


def upload_body(media_types: tuple[str, ...] = ("application/octet-stream",)) -> dict[str, Any]:
    """The OpenAPI request body of a streamed upload (the route reads the stream itself):
    the raw bytes under each of ``media_types``, or multipart with a ``file`` part of one
    of them and an optional JSON ``metadata`` part."""
    binary = {"schema": {"type": "string", "format": "binary", "minLength": 1}}
    text = {"schema": {"type": "string", "minLength": 1}}
    return {
        "requestBody": {
            "required": True,
            "description": "The raw bytes (Content-Type is the media type; optional "
            "X-Atom-Metadata header with a JSON object), or multipart/form-data with a `file` "
            "part and an optional `metadata` part. An empty body is a 400.",
            "content": {
                **{kind: text if kind.startswith("text/") else binary for kind in media_types},
                "multipart/form-data": {
                    "schema": {
                        "type": "object",
                        "required": ["file"],
                        "additionalProperties": False,
                        "properties": {
                            "file": {"type": "string", "format": "binary", "minLength": 1},
                            "metadata": {
                                "type": "object",
                                "description": "a JSON object of at most 16 KiB",
                            },
                        },
                    },
                    "encoding": {
                        "file": {"contentType": ", ".join(media_types)},
                        "metadata": {"contentType": "application/json"},
                    },
                },
            },
        }
    }


UPLOAD_BODY = upload_body()


@router.post(
    "",
    status_code=201,
    response_model=StoredAtomOut,
    openapi_extra=UPLOAD_BODY,
    responses={
        200: {"model": StoredAtomOut, "description": "Already held: the existing atom"},
        413: {"model": Problem, "content": {PROBLEM_JSON: {}}, "description": "Too large"},
    },
)
async def create_atom(request: Request, principal: Writer, platform: PlatformDep) -> JSONResponse:
    """Store bytes as an atom; the same bytes again return the same atom (200)."""
    check_declared_length(request, platform.settings.max_upload_bytes)
    upload = await run_in_threadpool(platform.atoms.begin_upload)
    body = await receive(request, upload)
    stored = await run_in_threadpool(
        lambda: platform.atoms.store(
            tenant_id=principal.tenant_id,
            upload=upload,
            media_type=body.media_type,
            metadata=body.metadata,
        )
    )
    out = StoredAtomOut.model_validate(
        {**AtomOut.of(stored.atom).model_dump(), "deduplicated": stored.deduplicated}
    )
    return JSONResponse(
        out.model_dump(mode="json"),
        status_code=200 if stored.deduplicated else 201,
        headers={"Location": f"/v1/atoms/{stored.atom.id}"},
    )


@router.get("", response_model=AtomPageOut)
def list_atoms(
    principal: Reader,
    platform: PlatformDep,
    modality: Modality | None = None,
    media_type: Annotated[str | None, Query(max_length=255, pattern=MEDIA_TYPE_PATTERN)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    cursor: Annotated[str | None, Query(max_length=512)] = None,
) -> AtomPageOut:
    """The tenant's atoms, newest first, a page at a time."""
    page = platform.atoms.list(
        tenant_id=principal.tenant_id,
        limit=min(limit, platform.settings.page_size_max),
        cursor=cursor,
        modality=modality.value if modality else None,
        media_type=media_type_of(media_type) if media_type else None,  # 400 when malformed
    )
    return AtomPageOut(items=[AtomOut.of(a) for a in page.items], next_cursor=page.next_cursor)


class AtomConcept(BaseModel):
    id: str
    name: str
    distance: float = Field(description="Cosine distance to the concept's centroid")
    broader_id: str | None = Field(
        default=None, description="The broad concept whose group holds that concept, if any"
    )


class AtomRecordOut(AtomOut):
    concept: AtomConcept | None = Field(
        default=None, description="The concept this atom (a chunk) belongs to (docs/concepts.md)"
    )


@router.get("/{atom_id}", response_model=AtomRecordOut)
def get_atom(atom_id: str, principal: Reader, platform: PlatformDep) -> AtomRecordOut:
    atom = platform.atoms.get(tenant_id=principal.tenant_id, atom_id=atom_id)
    found = platform.concepts.of_atom(principal.tenant_id, atom.id)
    concept = (
        AtomConcept(id=found[0].id, name=found[0].name, distance=found[1],
                    broader_id=found[0].broader_id)
        if found else None
    )  # fmt: skip
    return AtomRecordOut(**AtomOut.of(atom).model_dump(), concept=concept)


@router.head(
    "/{atom_id}/content",
    operation_id="head_atom_content",
    summary="Atom content headers",
    response_class=Response,
)
@router.get(
    "/{atom_id}/content",
    operation_id="get_atom_content",
    response_class=StreamingResponse,
    responses={
        200: {"content": {"application/octet-stream": {}}, "description": "The bytes"},
        **CONTENT_RESPONSES,
    },
)
def get_atom_content(
    atom_id: str,
    request: Request,
    principal: Reader,
    platform: PlatformDep,
    range_header: Annotated[str | None, Header(alias="range")] = None,
    if_range: Annotated[str | None, Header(alias="if-range")] = None,
    if_none_match: Annotated[str | None, Header(alias="if-none-match")] = None,
) -> Response:
    """Stream the bytes; ``ETag`` is the sha256, single ``Range`` requests get 206."""
    atom = platform.atoms.get(tenant_id=principal.tenant_id, atom_id=atom_id)
    return content_response(
        request,
        size=atom.size,
        sha256=atom.sha256,
        media_type=atom.media_type,
        body=lambda start, end: platform.atoms.read(atom, start, end),
        range_header=range_header,
        if_range=if_range,
        if_none_match=if_none_match,
    )


@router.delete("/{atom_id}", status_code=204, response_class=Response)
def delete_atom(atom_id: str, principal: Writer, platform: PlatformDep) -> Response:
    """Delete the atom; its bytes go once no atom of any tenant references them."""
    platform.atoms.delete(tenant_id=principal.tenant_id, atom_id=atom_id)
    return Response(status_code=204)
