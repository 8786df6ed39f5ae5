"""Starting ingestions: from an API upload or from a blob landing in ``uploads/``.

A blob named ``*.gguf`` is a model and starts the model ingestion instead."""

from __future__ import annotations

import mimetypes
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import TYPE_CHECKING, Protocol

from anyio import to_thread

from hartonomous.errors import InvalidInput, NotFound
from hartonomous.knowledge.ingestion import INGEST
from hartonomous.models.service import MODEL_MEDIA_TYPE
from hartonomous.models.starting import StartedModel, start_model_ingestion
from hartonomous.services import tenants as tenant_service
from hartonomous.services.atoms import StoredAtom
from hartonomous.services.workflows import WorkflowService
from hartonomous.workflows.client import WorkflowClient

if TYPE_CHECKING:
    from hartonomous.bootstrap import Platform

CHUNK = 1024 * 1024


class Readable(Protocol):
    def read(self, size: int = -1, /) -> bytes: ...


@dataclass(frozen=True)
class StartedIngestion:
    atom: StoredAtom
    instance_id: str


async def start_ingestion(
    platform: Platform, client: WorkflowClient, tenant_id: str, stored: StoredAtom
) -> StartedIngestion:
    instance_id = await WorkflowService(platform.uow_factory).start(
        client,
        tenant_id=tenant_id,
        name=INGEST,
        input={"tenant_id": tenant_id, "document_id": stored.atom.id},
    )
    return StartedIngestion(stored, instance_id)


def _store_stream(
    platform: Platform, tenant_id: str, name: str, stream: Readable, model: bool = False
) -> StoredAtom:
    upload = platform.atoms.begin_upload(platform.settings.max_model_bytes if model else None)
    try:
        while chunk := stream.read(CHUNK):
            upload.write(chunk)
    except BaseException:
        upload.abort()
        raise
    filename = PurePosixPath(name).name
    media_type = MODEL_MEDIA_TYPE if model else mimetypes.guess_type(filename)[0]
    return platform.atoms.store(
        tenant_id=tenant_id,
        upload=upload,
        media_type=media_type,
        metadata={"filename": filename, "source": f"blob:{name}"},
    )


async def ingest_upload(
    platform: Platform, client: WorkflowClient, blob_name: str, stream: Readable
) -> StartedIngestion | StartedModel:
    """``uploads/{tenant_id}/path/file.ext``: the tenant comes from the path, and must exist."""
    parts = PurePosixPath(blob_name).parts
    if parts and parts[0] == "uploads":
        parts = parts[1:]
    if len(parts) < 2:
        raise InvalidInput(f"upload {blob_name!r} is not under uploads/{{tenant_id}}/")
    tenant_id = parts[0]
    try:
        await to_thread.run_sync(
            lambda: tenant_service.get_tenant(platform.uow_factory, tenant_id=tenant_id)
        )
    except NotFound as exc:
        raise InvalidInput(f"upload {blob_name!r} names no known tenant") from exc
    name = "/".join(parts[1:])
    model = name.lower().endswith(".gguf")
    stored = await to_thread.run_sync(_store_stream, platform, tenant_id, name, stream, model)
    if model:
        return await start_model_ingestion(
            platform, client, tenant_id, stored, name=None, uploaded=True
        )
    return await start_ingestion(platform, client, tenant_id, stored)
