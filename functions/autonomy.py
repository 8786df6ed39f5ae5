"""The autonomous loop: its orchestrations and activities (code in hartonomous.autonomy)."""

from __future__ import annotations

from typing import Any

import azure.durable_functions as df

from functions import runtime
from hartonomous.autonomy import loop, names
from hartonomous.autonomy.activities import LoopActivities

bp = df.Blueprint()


@bp.orchestration_trigger(context_name="context", orchestration=names.RUN)
def autonomy_run(context: df.DurableOrchestrationContext) -> Any:
    return (yield from loop.run(context))


@bp.orchestration_trigger(context_name="context", orchestration=names.SCHEDULE)
def autonomy_schedule(context: df.DurableOrchestrationContext) -> Any:
    return (yield from loop.schedule(context))


@bp.orchestration_trigger(context_name="context", orchestration=names.RETRY_DEAD_LETTER)
def autonomy_retry_dead_letter(context: df.DurableOrchestrationContext) -> Any:
    return (yield from loop.retry_dead_letter(context))


def _loop() -> LoopActivities:
    return runtime.platform().autonomy_loop()


@bp.activity_trigger(input_name="data", activity=loop.ANALYZE)
def autonomy_analyze(data: dict[str, Any]) -> dict[str, Any]:
    return _loop().analyze(data)


@bp.activity_trigger(input_name="data", activity=loop.HYPOTHESIZE)
def autonomy_hypothesize(data: dict[str, Any]) -> dict[str, Any]:
    return _loop().hypothesize(data)


@bp.activity_trigger(input_name="data", activity=loop.REQUEST_APPROVALS)
def autonomy_request_approvals(data: dict[str, Any]) -> dict[str, Any]:
    return _loop().request_approvals(data)


@bp.activity_trigger(input_name="data", activity=loop.SETTLE_APPROVAL)
def autonomy_settle_approval(data: dict[str, Any]) -> dict[str, Any]:
    return _loop().settle_approval(data)


@bp.activity_trigger(input_name="data", activity=loop.RECORD_PHASE)
def autonomy_record_phase(data: dict[str, Any]) -> bool:
    return _loop().record_phase(data)


@bp.activity_trigger(input_name="data", activity=loop.BASELINE)
def autonomy_baseline(data: dict[str, Any]) -> dict[str, Any]:
    return _loop().baseline(data)


@bp.activity_trigger(input_name="data", activity=loop.ACT)
def autonomy_act(data: dict[str, Any]) -> dict[str, Any]:
    return _loop().act(data)


@bp.activity_trigger(input_name="data", activity=loop.DEAD_LETTER)
def autonomy_dead_letter(data: dict[str, Any]) -> dict[str, Any]:
    return _loop().dead_letter(data)


@bp.activity_trigger(input_name="data", activity=loop.RESOLVE_DEAD_LETTER)
def autonomy_resolve_dead_letter(data: dict[str, Any]) -> bool:
    return _loop().resolve_dead_letter(data)


@bp.activity_trigger(input_name="data", activity=loop.LEARN)
def autonomy_learn(data: dict[str, Any]) -> dict[str, Any]:
    return _loop().learn(data)


@bp.activity_trigger(input_name="data", activity=loop.FINISH)
def autonomy_finish(data: dict[str, Any]) -> bool:
    return _loop().finish(data)


@bp.activity_trigger(input_name="data", activity=loop.SCHEDULE_POLICY)
def autonomy_schedule_policy(data: dict[str, Any]) -> dict[str, Any]:
    return _loop().schedule_policy(data)


@bp.activity_trigger(input_name="data", activity=loop.START_SCHEDULED)
def autonomy_start_scheduled(data: dict[str, Any]) -> dict[str, Any]:
    return _loop().start_scheduled(data)
