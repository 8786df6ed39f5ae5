"""Diagnostics orchestrations and their activity (code in hartonomous.workflows.diagnostics)."""

from __future__ import annotations

from typing import Any

import azure.durable_functions as df

from hartonomous.workflows import diagnostics

bp = df.Blueprint()


@bp.orchestration_trigger(context_name="context", orchestration=diagnostics.FAN_OUT)
def diagnostics_fan_out(context: df.DurableOrchestrationContext) -> Any:
    return (yield from diagnostics.fan_out(context))


@bp.orchestration_trigger(context_name="context", orchestration=diagnostics.CHAIN)
def diagnostics_chain(context: df.DurableOrchestrationContext) -> Any:
    return (yield from diagnostics.chain(context))


@bp.activity_trigger(input_name="value", activity=diagnostics.NOOP)
def diagnostics_noop(value: int) -> int:
    return diagnostics.noop(value)
