"""Model ingestion: the orchestration and its activities (code in hartonomous.models)."""

from __future__ import annotations

from typing import Any

import azure.durable_functions as df

from functions import runtime
from hartonomous.models import workflow
from hartonomous.models.service import ModelService

bp = df.Blueprint()


@bp.orchestration_trigger(context_name="context", orchestration=workflow.INGEST_MODEL)
def ingest_model(context: df.DurableOrchestrationContext) -> Any:
    return (yield from workflow.ingest_model(context))


def _models() -> ModelService:
    return runtime.platform().models


@bp.activity_trigger(input_name="job", activity=workflow.PLAN)
def model_plan(job: dict[str, Any]) -> dict[str, Any]:
    return _models().plan(job["tenant_id"], job["model_id"])


@bp.activity_trigger(input_name="job", activity=workflow.STORE)
def model_store_parts(job: dict[str, Any]) -> list[list[Any]]:
    return _models().store_parts(job["tenant_id"], job["model_id"], job["parts"])


@bp.activity_trigger(input_name="job", activity=workflow.FINISH)
def model_finish(job: dict[str, Any]) -> dict[str, Any]:
    return _models().finish(
        job["tenant_id"], job["model_id"], job["stored"], bool(job.get("drop_source"))
    )


@bp.activity_trigger(input_name="job", activity=workflow.FAIL)
def model_fail(job: dict[str, Any]) -> None:
    _models().fail(job["tenant_id"], job["model_id"], job["error"])


@bp.activity_trigger(input_name="job", activity=workflow.PROFILE)
def model_profile(job: dict[str, Any]) -> dict[str, str]:
    stored = _models().store_profile(job["tenant_id"], job["model_id"])
    return {"tenant_id": job["tenant_id"], "document_id": stored.atom.id}
