"""``/v1/uploads``: upload sessions, for files larger than one request may carry.

``POST /v1/uploads`` declares the file and answers where to send it (``url``, ``method``,
``headers``): a SAS URL of a staging blob on Azure (the Functions host never sees the bytes),
``PUT /v1/uploads/{id}/content`` of this app in the embedded world (its URL carries its own
token, like a SAS; an API key of the tenant works too). ``POST /v1/uploads/{id}/complete``
makes the bytes an atom and, by purpose, starts the document's or model's workflow.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials
from pydantic import BaseModel, ConfigDict, Field, field_validator

from hartonomous.api.atoms import AtomOut, StoredAtomOut
from hartonomous.api.auth import Writer, _bearer, _principal
from hartonomous.api.deps import PlatformDep, get_workflow_client
from hartonomous.api.knowledge import IngestionOut
from hartonomous.api.models import ModelStarted
from hartonomous.api.problems import PROBLEM_RESPONSES
from hartonomous.api.problems import documented as _problem
from hartonomous.bootstrap import Platform
from hartonomous.domain.atoms import MEDIA_TYPE_PATTERN
from hartonomous.domain.metadata import check_metadata
from hartonomous.domain.tenants import Scope
from hartonomous.domain.uploads import Purpose, UploadSession
from hartonomous.errors import Forbidden, InvalidInput, ServiceUnavailable, UnprocessableContent
from hartonomous.knowledge.uploads import complete_upload
from hartonomous.ports import WorkflowClient

router = APIRouter(prefix="/v1/uploads", tags=["uploads"], responses=PROBLEM_RESPONSES)
BATCH = 1024 * 1024


class UploadIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    size: Annotated[int, Field(ge=1, le=2**53, description="Exact size of the file in bytes")]
    media_type: Annotated[str | None, Field(max_length=255, pattern=MEDIA_TYPE_PATTERN)] = None
    metadata: dict[str, Any] = Field(default_factory=dict, description="As X-Atom-Metadata")

    @field_validator("metadata")
    @classmethod
    def _storable(cls, value: dict[str, Any]) -> dict[str, Any]:
        """Refused now, not when the bytes are complete (domain/metadata.py)."""
        try:
            check_metadata(value)
        except InvalidInput as exc:
            raise ValueError(exc.detail) from exc
        return value

    purpose: Purpose = Field(
        default=Purpose.ATOM,
        description="atom: store it; document: store and ingest it; model: a GGUF to add",
    )


class UploadOut(BaseModel):
    upload_id: str
    url: str = Field(description="Send the file's bytes here, all of them in one request")
    method: str
    headers: dict[str, str] = Field(description="Send these headers with the bytes")
    expires_at: datetime = Field(description="The url and the session end then (410 after)")


class UploadStatusOut(BaseModel):
    upload_id: str
    status: str = Field(description="pending, completing, stored, completed or failed")
    purpose: Purpose
    size: int
    media_type: str
    expires_at: datetime
    atom_id: str | None
    instance_id: str | None
    model_id: str | None
    error: str | None

    @classmethod
    def of(cls, s: UploadSession) -> UploadStatusOut:
        return cls(
            upload_id=s.id,
            status=s.status.value,
            purpose=s.purpose,
            size=s.size,
            media_type=s.media_type,
            expires_at=s.expires_at,
            atom_id=s.atom_id,
            instance_id=s.instance_id,
            model_id=s.model_id,
            error=s.error,
        )


@router.post(
    "",
    status_code=201,
    response_model=UploadOut,
    responses={**_problem(413, "Larger than allowed"), **_problem(422, "Cannot be ingested")},
)
async def open_upload(
    body: UploadIn, request: Request, principal: Writer, platform: PlatformDep
) -> JSONResponse:
    """Declare a file; send its bytes to the answer's ``url``, then complete the upload."""
    opened = await run_in_threadpool(
        lambda: platform.uploads.open(
            principal.tenant_id,
            size=body.size,
            media_type=body.media_type,
            metadata=body.metadata,
            purpose=body.purpose,
        )
    )
    session = opened.session
    if opened.target is not None:
        url, method, headers = opened.target.url, opened.target.method, opened.target.headers
    else:
        own = request.url_for("put_upload_content", upload_id=session.id)
        url = str(own.include_query_params(token=opened.token))
        method, headers = "PUT", {"Content-Type": "application/octet-stream"}
    out = UploadOut(
        upload_id=session.id, url=url, method=method, headers=headers, expires_at=session.expires_at
    )
    return JSONResponse(
        out.model_dump(mode="json"),
        status_code=201,
        headers={"Location": f"/v1/uploads/{session.id}"},
    )


@router.get("/{upload_id}", response_model=UploadStatusOut)
def get_upload(upload_id: str, principal: Writer, platform: PlatformDep) -> UploadStatusOut:
    """Where the session stands (the blob trigger may have completed it on Azure)."""
    return UploadStatusOut.of(platform.uploads.get(principal.tenant_id, upload_id))


@router.put(
    "/{upload_id}/content",
    name="put_upload_content",
    status_code=204,
    response_class=Response,
    openapi_extra={
        "requestBody": {
            "required": True,
            "description": "Exactly the declared number of bytes, streamed.",
            "content": {
                "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}
            },
        }
    },
    responses={**_problem(410, "The session expired"), **_problem(422, "Not the declared size")},
)
async def put_upload_content(
    upload_id: str,
    request: Request,
    platform: PlatformDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    token: Annotated[str | None, Query(max_length=100, description="The url's own")] = None,
) -> Response:
    """The session's bytes through this app, streamed to its staging object (flat memory)."""
    tenant_id = None
    if token is None:
        principal = await _principal(request, platform, credentials)
        if not principal.scope.allows(Scope.WRITE):
            raise Forbidden(f"this API key has scope '{principal.scope}'; this needs 'write'")
        tenant_id = principal.tenant_id
    writer = await run_in_threadpool(
        lambda: platform.uploads.receiver(upload_id, token=token, tenant_id=tenant_id)
    )
    try:
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) != writer.size:
            raise UnprocessableContent(
                f"Content-Length is {declared}, the session declared {writer.size} bytes",
                declared=writer.size,
            )
        batch = bytearray()
        async for chunk in request.stream():
            batch += chunk
            if len(batch) >= BATCH:
                await run_in_threadpool(writer.write, batch)
                batch = bytearray()
        if batch:
            await run_in_threadpool(writer.write, batch)
        await run_in_threadpool(writer.finish)
    except BaseException:
        await run_in_threadpool(writer.abort)
        raise
    return Response(status_code=204)


def _client(platform: Platform) -> WorkflowClient | None:
    try:
        return get_workflow_client(platform)
    except ServiceUnavailable:
        return None  # an atom needs none; a workflow's start says what is missing


@router.post(
    "/{upload_id}/complete",
    response_model=StoredAtomOut,
    status_code=201,
    responses={
        200: {"model": StoredAtomOut, "description": "Atom session: already held, that atom"},
        202: {
            "model": IngestionOut | ModelStarted,
            "description": "Document or model session: its workflow started",
        },
        **_problem(409, "No bytes yet, or being completed (Retry-After)"),
        **_problem(410, "The session expired"),
        **_problem(422, "Not the declared size, or not what the purpose needs"),
    },
)
async def complete(upload_id: str, principal: Writer, platform: PlatformDep) -> JSONResponse:
    """Make the bytes an atom (201) or start their ingestion or model workflow (202);
    completing again answers the same."""
    session = await complete_upload(platform, _client(platform), principal.tenant_id, upload_id)
    return await run_in_threadpool(answer, platform, session)


def answer(platform: Platform, session: UploadSession) -> JSONResponse:
    """What a completed session answers, the same every time."""
    assert session.atom_id is not None and session.deduplicated is not None
    if session.purpose is Purpose.ATOM:
        atom = platform.atoms.get(tenant_id=session.tenant_id, atom_id=session.atom_id)
        out = StoredAtomOut.model_validate(
            {**AtomOut.of(atom).model_dump(), "deduplicated": session.deduplicated}
        )
        return JSONResponse(
            out.model_dump(mode="json"),
            status_code=200 if session.deduplicated else 201,
            headers={"Location": f"/v1/atoms/{atom.id}"},
        )
    assert session.instance_id is not None
    status_url = f"/v1/workflows/{session.instance_id}"
    if session.purpose is Purpose.DOCUMENT:
        body: BaseModel = IngestionOut(
            atom_id=session.atom_id,
            instance_id=session.instance_id,
            status_url=status_url,
            deduplicated=session.deduplicated,
        )
        location = status_url
    else:
        assert session.model_id is not None
        body = ModelStarted(
            model_id=session.model_id, instance_id=session.instance_id, status_url=status_url
        )
        location = f"/v1/models/{session.model_id}"
    return JSONResponse(body.model_dump(), status_code=202, headers={"Location": location})
