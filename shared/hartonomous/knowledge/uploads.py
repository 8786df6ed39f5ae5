"""Starting ingestions: from an API upload or from a completed upload session.

Completing a session (``POST /v1/uploads/{id}/complete``, or on Azure the Event Grid blob
trigger when the bytes land) stores the atom once and, by purpose, starts the document's
ingestion or the model's; a document or model session stays claimed until its workflow has
started, so racing completions start it once.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

from anyio import to_thread

from hartonomous.domain.uploads import Purpose, Status, UploadSession
from hartonomous.errors import HartonomousError, ServiceUnavailable, UnprocessableContent
from hartonomous.knowledge.ingestion import INGEST
from hartonomous.models.starting import start_model_ingestion
from hartonomous.ports import WorkflowClient
from hartonomous.services.atoms import StoredAtom
from hartonomous.services.upload_sessions import replayed

if TYPE_CHECKING:
    from hartonomous.bootstrap import Platform

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StartedIngestion:
    atom: StoredAtom
    instance_id: str


async def start_ingestion(
    platform: Platform, client: WorkflowClient, tenant_id: str, stored: StoredAtom
) -> StartedIngestion:
    instance_id = await platform.tenant_workflows.start(
        client,
        tenant_id=tenant_id,
        name=INGEST,
        input={"tenant_id": tenant_id, "document_id": stored.atom.id},
    )
    return StartedIngestion(stored, instance_id)


async def complete_upload(
    platform: Platform, client: WorkflowClient | None, tenant_id: str, upload_id: str
) -> UploadSession:
    """The session completed (or as it ended before): its atom, workflow or model.

    ``client`` may be None for atom sessions (no workflow to start)."""
    sessions = platform.uploads
    claim = await to_thread.run_sync(sessions.claim, tenant_id, upload_id)
    if claim.claim_id is None:
        return replayed(claim.session)
    session, claim_id = claim.session, claim.claim_id
    stored = await to_thread.run_sync(sessions.store, session, claim_id)
    if session.purpose is Purpose.ATOM:
        return await to_thread.run_sync(sessions.get, tenant_id, upload_id)
    try:
        if client is None:
            raise ServiceUnavailable(
                "workflows are not available in this process to start the upload's "
                "workflow: run `hartonomous serve`, or the Function App"
            )
        if session.purpose is Purpose.DOCUMENT:
            started = await start_ingestion(platform, client, tenant_id, stored)
            instance_id, model_id = started.instance_id, None
        else:
            name = session.metadata.get("name")
            model = await start_model_ingestion(
                platform,
                client,
                tenant_id,
                stored,
                name=name if isinstance(name, str) else None,
                uploaded=True,
            )
            instance_id, model_id = model.instance_id, model.model.id
    except UnprocessableContent as exc:  # not a GGUF...: no retry will make it one
        await to_thread.run_sync(sessions.fail, session, claim_id, exc.detail)
        raise
    except BaseException:
        await to_thread.run_sync(sessions.release, session, claim_id, Status.STORED)
        raise
    return await to_thread.run_sync(
        lambda: sessions.finish(session, claim_id, instance_id=instance_id, model_id=model_id)
    )


async def complete_uploaded_blob(
    platform: Platform, client: WorkflowClient, tenant_id: str, upload_id: str
) -> UploadSession | None:
    """The blob trigger's completion: what the client could be told is logged instead (the
    host would only retry the same bytes, then park them as poison)."""
    try:
        return await complete_upload(platform, client, tenant_id, upload_id)
    except HartonomousError as exc:
        log.warning("upload %s/%s not completed: %s", tenant_id, upload_id, exc.detail)
        return None
