"""The activity every orchestrator calls as it fails (code in hartonomous.store)."""

from __future__ import annotations

from typing import Any

import azure.durable_functions as df

from functions import runtime
from hartonomous.services.clock import utcnow
from hartonomous.store import workflow_failures

bp = df.Blueprint()


@bp.activity_trigger(input_name="failure", activity=workflow_failures.RECORD_FAILURE)
def workflow_record_failure(failure: dict[str, Any]) -> bool:
    return workflow_failures.record_workflow_failure(
        runtime.platform().uow_factory, failure, utcnow()
    )
