"""Agent runs: the orchestration and its activities (code in hartonomous.agents)."""

from __future__ import annotations

from typing import Any

import azure.durable_functions as df

from functions import runtime
from hartonomous.agents import names, run
from hartonomous.agents.activities import AgentActivities

bp = df.Blueprint()


@bp.orchestration_trigger(context_name="context", orchestration=names.RUN)
def agent_run(context: df.DurableOrchestrationContext) -> Any:
    return (yield from run.run(context))


def _agents() -> AgentActivities:
    return runtime.platform().agent_activities()


@bp.activity_trigger(input_name="data", activity=names.THINK)
def agent_think(data: dict[str, Any]) -> dict[str, Any]:
    return _agents().think(data)


@bp.activity_trigger(input_name="data", activity=names.REQUEST_APPROVAL)
def agent_request_approval(data: dict[str, Any]) -> dict[str, Any]:
    return _agents().request_approval(data)


@bp.activity_trigger(input_name="data", activity=names.SETTLE_APPROVAL)
def agent_settle_approval(data: dict[str, Any]) -> dict[str, Any]:
    return _agents().settle_approval(data)


@bp.activity_trigger(input_name="data", activity=names.TOOL)
def agent_tool(data: dict[str, Any]) -> dict[str, Any]:
    return _agents().tool(data)


@bp.activity_trigger(input_name="data", activity=names.FINISH)
def agent_finish(data: dict[str, Any]) -> dict[str, Any]:
    return _agents().finish(data)
