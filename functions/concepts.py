"""Concepts: the discovery orchestration, its activities and the hourly timer (code in
hartonomous.concepts)."""

from __future__ import annotations

import logging
from typing import Any

import azure.durable_functions as df
import azure.functions as func

from functions import runtime
from hartonomous.concepts import workflow
from hartonomous.concepts.discovery import RunRef

bp = df.Blueprint()
log = logging.getLogger(__name__)


@bp.orchestration_trigger(context_name="context", orchestration=workflow.DISCOVER)
def concepts_discover(context: df.DurableOrchestrationContext) -> Any:
    return (yield from workflow.discover(context))


@bp.activity_trigger(input_name="ref", activity=workflow.CLUSTER)
def concepts_cluster(ref: dict[str, Any]) -> dict[str, Any]:
    return runtime.platform().concepts.discovery.cluster(RunRef.from_json(ref)).to_json()


@bp.activity_trigger(input_name="ref", activity=workflow.BIND)
def concepts_bind(ref: dict[str, Any]) -> dict[str, Any]:
    return runtime.platform().concepts.discovery.bind(RunRef.from_json(ref)).to_json()


@bp.activity_trigger(input_name="ref", activity=workflow.FINISH)
def concepts_finish(ref: dict[str, Any]) -> dict[str, Any]:
    return runtime.platform().concepts.discovery.finish(RunRef.from_json(ref), ref.get("error"))


@bp.timer_trigger(schedule="0 15 * * * *", arg_name="timer", run_on_startup=False)
@bp.durable_client_input(client_name="client")
async def concepts_hourly(timer: func.TimerRequest, client: df.DurableOrchestrationClient) -> None:
    """Every hour at :15, a discovery for each tenant and modality that enabled it
    (PUT /v1/concepts/schedule); one already running is left to finish."""
    started = await runtime.platform().concepts.start_scheduled(client)
    log.info("scheduled concept discoveries started: %d", started)
