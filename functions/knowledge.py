"""Ingestion: the orchestration, its activities, and the uploads blob trigger.

Code in hartonomous.knowledge.ingestion; these wrappers only resolve the platform.
"""

from __future__ import annotations

import logging
from typing import Any

import azure.durable_functions as df
import azure.functions as func

from functions import runtime
from hartonomous.errors import InvalidInput, UnprocessableContent
from hartonomous.knowledge import ingestion
from hartonomous.knowledge.uploads import ingest_upload

bp = df.Blueprint()
log = logging.getLogger(__name__)


@bp.orchestration_trigger(context_name="context", orchestration=ingestion.INGEST)
def ingest_document(context: df.DurableOrchestrationContext) -> Any:
    return (yield from ingestion.ingest(context))


def _ingestion() -> ingestion.Ingestion:
    return runtime.platform().knowledge.get().ingestion


@bp.activity_trigger(input_name="document", activity=ingestion.PLAN)
def ingest_plan(document: dict[str, str]) -> dict[str, Any]:
    return _ingestion().plan(document["tenant_id"], document["document_id"])


@bp.activity_trigger(input_name="batch", activity=ingestion.EMBED)
def ingest_embed_batch(batch: dict[str, Any]) -> int:
    return _ingestion().embed_batch(batch["tenant_id"], batch["document_id"], batch["shas"])


@bp.activity_trigger(input_name="document", activity=ingestion.INDEX)
def ingest_index(document: dict[str, str]) -> dict[str, Any]:
    return _ingestion().index_document(document["tenant_id"], document["document_id"])


@bp.blob_trigger(arg_name="upload", path="uploads/{name}", connection="AzureWebJobsStorage")
@bp.durable_client_input(client_name="client")
async def ingest_uploaded_blob(
    upload: func.InputStream, client: df.DurableOrchestrationClient
) -> None:
    """A blob under uploads/{tenant_id}/... becomes a document (or, ``*.gguf``, a model)
    and is ingested. Bad input is logged, not raised: the host would retry the same bytes
    five times and then park them as poison."""
    try:
        await ingest_upload(runtime.platform(), client, upload.name or "", upload)
    except (InvalidInput, UnprocessableContent) as exc:
        log.warning("upload %s refused: %s", upload.name, exc)
