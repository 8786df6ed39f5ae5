"""Ingestion: the orchestration and its activities (uploads complete in functions/uploads).

Code in hartonomous.knowledge.ingestion; these wrappers only resolve the platform.
"""

from __future__ import annotations

from typing import Any

import azure.durable_functions as df

from functions import runtime
from hartonomous.knowledge import ingestion

bp = df.Blueprint()


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
