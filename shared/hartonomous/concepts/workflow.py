"""The ``concepts_discover`` orchestration: cluster, then bind, then finish the run.

One instance per run (``concepts-{run id}``). Progress is in the custom status; a failure
marks the run failed, which frees the tenant and modality for the next discovery, before it
ends the instance as Failed.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

import azure.durable_functions as df

DISCOVER = "concepts_discover"
CLUSTER = "concepts_cluster"
BIND = "concepts_bind"
FINISH = "concepts_finish"

RETRY = df.RetryOptions(first_retry_interval_in_milliseconds=2000, max_number_of_attempts=3)


def discover(context: df.DurableOrchestrationContext) -> Generator[Any, Any, dict[str, Any]]:
    ref = context.get_input()  # {tenant_id, run_id}: RunRef.to_json
    try:
        context.set_custom_status({"stage": "clustering", "run_id": ref["run_id"]})
        clustered = yield context.call_activity_with_retry(CLUSTER, RETRY, ref)
        context.set_custom_status({"stage": "binding", "run_id": ref["run_id"], **clustered})
        yield context.call_activity_with_retry(BIND, RETRY, ref)
        context.set_custom_status({"stage": "done", "run_id": ref["run_id"], **clustered})
    except Exception as exc:
        yield context.call_activity(FINISH, {**ref, "error": str(exc) or type(exc).__name__})
        raise
    result: dict[str, Any] = yield context.call_activity(FINISH, {**ref, "error": None})
    return result  # {run_id, status, clustered, bound}
