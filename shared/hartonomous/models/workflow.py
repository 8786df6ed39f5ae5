"""The model ingestion orchestration: plan, store parts in waves (fan-out), finish, profile.

Only part indexes and digests travel through the history: each activity re-reads the
file's header (cached per process) and the byte ranges it needs from the blob store.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

import azure.durable_functions as df

from hartonomous.knowledge.ingestion import INGEST
from hartonomous.store.workflow_failures import RECORD_FAILURE

INGEST_MODEL = "ingest_model"
PLAN = "model_plan"
STORE = "model_store_parts"
FINISH = "model_finish"
FAIL = "model_fail"
PROFILE = "model_profile"
WAVE = 8  # storing activities in flight at once; progress moves between waves

RETRY = df.RetryOptions(first_retry_interval_in_milliseconds=1000, max_number_of_attempts=3)


def ingest_model(context: df.DurableOrchestrationContext) -> Generator[Any, Any, dict[str, Any]]:
    job = context.get_input()  # {tenant_id, model_id, drop_source}
    try:
        plan = yield context.call_activity(PLAN, job)
        groups, sizes = plan["groups"], plan["group_bytes"]
        total_parts = sum(len(g) for g in groups)
        status = {"stage": "storing", "parts_total": total_parts, "parts_done": 0,
                  "bytes_total": plan["bytes"], "bytes_done": 0}  # fmt: skip
        context.set_custom_status(status)
        stored: list[list[Any]] = []
        for i in range(0, len(groups), WAVE):
            wave = [
                context.call_activity_with_retry(STORE, RETRY, {**job, "parts": g})
                for g in groups[i : i + WAVE]
            ]
            for result in (yield context.task_all(wave)):
                stored.extend(result)
            status |= {"parts_done": len(stored), "bytes_done": sum(sizes[: i + WAVE])}
            context.set_custom_status(status)
        result = yield context.call_activity_with_retry(FINISH, RETRY, {**job, "stored": stored})
    except Exception as exc:
        yield context.call_activity(FAIL, {**job, "error": str(exc)})
        yield context.call_activity(RECORD_FAILURE, _failure(context, job, exc))
        raise
    try:  # the model is ready: a failed profile leaves it so, and is recorded for a retry
        context.set_custom_status(status | {"stage": "profiling"})
        profile = yield context.call_activity_with_retry(PROFILE, RETRY, job)
        yield context.call_sub_orchestrator(INGEST, profile)
    except Exception as exc:
        yield context.call_activity(RECORD_FAILURE, _failure(context, job, exc))
        raise
    context.set_custom_status(status | {"stage": "ready"})
    return {**result, "profile_atom_id": profile["document_id"]}


def _failure(context: df.DurableOrchestrationContext, job: Any, exc: Exception) -> dict[str, Any]:
    return {"instance_id": context.instance_id, "name": INGEST_MODEL,
            "tenant_id": job["tenant_id"], "input": job, "error": str(exc)}  # fmt: skip
