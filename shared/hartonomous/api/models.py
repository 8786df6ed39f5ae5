"""``/v1/models``: GGUF models as manifests over tensor atoms."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from hartonomous.api.atoms import UPLOAD_BODY
from hartonomous.api.auth import Reader, Writer
from hartonomous.api.deps import PlatformDep, WorkflowClientDep
from hartonomous.api.problems import PROBLEM_JSON, PROBLEM_RESPONSES, Problem
from hartonomous.api.ranges import CONTENT_RESPONSES, content_response
from hartonomous.api.uploads import check_declared_length, receive
from hartonomous.errors import InvalidInput
from hartonomous.knowledge.uploads import start_ingestion
from hartonomous.models.service import MODEL_MEDIA_TYPE
from hartonomous.models.starting import start_model_ingestion
from hartonomous.models.store import ModelRecord
from hartonomous.services.atoms import StoredAtom

router = APIRouter(prefix="/v1/models", tags=["models"], responses=PROBLEM_RESPONSES)
MAX_JSON_BYTES = 64 * 1024


class FromAtom(BaseModel):
    model_config = ConfigDict(extra="forbid")

    atom_id: Annotated[str, Field(min_length=1, max_length=36)]
    name: Annotated[str | None, Field(max_length=200)] = None


class ModelStarted(BaseModel):
    model_id: str
    instance_id: str
    status_url: str = Field(description="GET it for progress (customStatus) and the result")


class ModelOut(BaseModel):
    id: str
    name: str
    status: str = Field(description="ingesting, ready or failed")
    error: str | None
    instance_id: str | None
    sha256: str = Field(description="SHA-256 of the whole GGUF file (its export's too)")
    architecture: str | None
    parameter_count: int | None
    quantization: dict[str, int] | None = Field(description="ggml type -> tensor count")
    context_length: int | None
    vocab_size: int | None
    block_count: int | None
    chat_template: bool | None
    license: str | None
    logical_bytes: int = Field(description="Size of the GGUF file this model exports")
    new_bytes: int | None = Field(description="Bytes this model added to storage")
    dedup_ratio: float | None = Field(description="logical_bytes / new_bytes (null when 0)")
    parent_id: str | None
    layers: list[int] | None
    profile_atom_id: str | None = Field(description="The searchable capability profile")
    info: dict[str, Any] | None
    created_at: datetime

    @classmethod
    def of(cls, r: ModelRecord) -> ModelOut:
        return cls(
            **{k: getattr(r, k) for k in cls.model_fields if hasattr(r, k)},
            logical_bytes=r.file_size,
            dedup_ratio=round(r.file_size / r.new_bytes, 3) if r.new_bytes else None,
        )


class ModelList(BaseModel):
    items: list[ModelOut]
    next_cursor: str | None


class SliceIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    layers: Annotated[list[Annotated[int, Field(ge=0)]], Field(min_length=1, max_length=4096)]
    name: Annotated[str | None, Field(max_length=200)] = None


@router.post(
    "",
    status_code=202,
    response_model=ModelStarted,
    openapi_extra={
        "requestBody": {
            **UPLOAD_BODY["requestBody"],
            "description": "A GGUF file (raw or multipart, streamed), or application/json "
            '{"atom_id": ..., "name": ...} naming a GGUF atom already stored.',
            "content": {
                **UPLOAD_BODY["requestBody"]["content"],
                "application/json": {"schema": FromAtom.model_json_schema()},
            },
        }
    },
    responses={
        413: {"model": Problem, "content": {PROBLEM_JSON: {}}, "description": "Too large"},
        422: {"model": Problem, "content": {PROBLEM_JSON: {}}, "description": "Not a GGUF"},
    },
)
async def create_model(
    request: Request, principal: Writer, platform: PlatformDep, client: WorkflowClientDep
) -> JSONResponse:
    """Register a GGUF model and start taking it apart into tensor atoms."""
    tenant_id = principal.tenant_id
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type == "application/json":
        check_declared_length(request, MAX_JSON_BYTES)
        raw = await request.body()
        try:
            body = FromAtom.model_validate_json(raw)
        except ValidationError as exc:
            raise InvalidInput('the body must be {"atom_id": ..., "name": ...}') from exc
        atom = await run_in_threadpool(
            lambda: platform.atoms.get(tenant_id=tenant_id, atom_id=body.atom_id)
        )
        stored, name, uploaded = StoredAtom(atom, deduplicated=True), body.name, False
    else:
        limit = platform.settings.max_model_bytes
        check_declared_length(request, limit)
        upload = await run_in_threadpool(platform.atoms.begin_upload, limit)
        received = await receive(request, upload)
        metadata = received.metadata
        stored = await run_in_threadpool(
            lambda: platform.atoms.store(
                tenant_id=tenant_id,
                upload=upload,
                media_type=MODEL_MEDIA_TYPE,
                metadata=metadata,
            )
        )
        name = metadata.get("name") if isinstance(metadata.get("name"), str) else None
        uploaded = True
    started = await start_model_ingestion(
        platform, client, tenant_id, stored, name=name, uploaded=uploaded
    )
    out = ModelStarted(
        model_id=started.model.id,
        instance_id=started.instance_id,
        status_url=f"/v1/workflows/{started.instance_id}",
    )
    return JSONResponse(
        out.model_dump(), status_code=202, headers={"Location": f"/v1/models/{out.model_id}"}
    )


@router.get("", response_model=ModelList)
def list_models(
    principal: Reader,
    platform: PlatformDep,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: Annotated[str | None, Query(max_length=500)] = None,
) -> ModelList:
    """The tenant's models, newest first."""
    page = platform.models.page(principal.tenant_id, limit, cursor)
    return ModelList(items=[ModelOut.of(m) for m in page.items], next_cursor=page.next_cursor)


@router.get("/{model_id}", response_model=ModelOut)
def get_model(model_id: str, principal: Reader, platform: PlatformDep) -> ModelOut:
    return ModelOut.of(platform.models.get(principal.tenant_id, model_id))


@router.head("/{model_id}/gguf", operation_id="head_model_gguf", response_class=Response)
@router.get(
    "/{model_id}/gguf",
    operation_id="get_model_gguf",
    response_class=StreamingResponse,
    responses={
        200: {"content": {"application/octet-stream": {}}, "description": "The GGUF file"},
        409: {"model": Problem, "content": {PROBLEM_JSON: {}}, "description": "Not ready"},
        **CONTENT_RESPONSES,
    },
)
def export_model(
    model_id: str,
    request: Request,
    principal: Reader,
    platform: PlatformDep,
    range_header: Annotated[str | None, Header(alias="range")] = None,
    if_range: Annotated[str | None, Header(alias="if-range")] = None,
    if_none_match: Annotated[str | None, Header(alias="if-none-match")] = None,
) -> Response:
    """The GGUF file reassembled from its parts: byte-identical to the upload (same ETag,
    the file's SHA-256); single ``Range`` requests resume a download."""
    record, parts = platform.models.ready_parts(principal.tenant_id, model_id)
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in record.name)[:100]
    return content_response(
        request,
        size=record.file_size,
        sha256=record.sha256,
        media_type=MODEL_MEDIA_TYPE,
        body=lambda start, end: platform.models.read(parts, start, end),
        range_header=range_header,
        if_range=if_range,
        if_none_match=if_none_match,
        headers={"Content-Disposition": f'attachment; filename="{safe or "model"}.gguf"'},
    )


@router.post("/{model_id}/slices", status_code=201, response_model=ModelOut)
async def create_slice(
    model_id: str,
    body: SliceIn,
    principal: Writer,
    platform: PlatformDep,
    client: WorkflowClientDep,
) -> JSONResponse:
    """A new model of the chosen transformer blocks (renumbered from 0), sharing the
    parent's tensor atoms: only its header is new."""
    record = await run_in_threadpool(
        platform.models.create_slice, principal.tenant_id, model_id, body.layers, body.name
    )
    profile = await run_in_threadpool(platform.models.store_profile, principal.tenant_id, record.id)
    await start_ingestion(platform, client, principal.tenant_id, profile)
    out = ModelOut.of(platform.models.get(principal.tenant_id, record.id))
    return JSONResponse(
        out.model_dump(mode="json"), status_code=201, headers={"Location": f"/v1/models/{out.id}"}
    )
