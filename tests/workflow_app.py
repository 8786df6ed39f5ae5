"""Orchestrators and activities for the workflow tests, on a blueprint like functions/ uses.

Also runnable as a script (``python workflow_app.py DB_URL LOG N``): it starts the local host
on that database and a chain whose activity logs each call, for the crash-and-resume test.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from collections import Counter
from datetime import timedelta
from pathlib import Path
from typing import Any

import azure.durable_functions as df

from hartonomous.workflows.actions import BackoffRetryOptions

bp = df.Blueprint()
calls: Counter[str] = Counter()
calls_lock = threading.Lock()
replays: Counter[str] = Counter()
LOG: dict[str, Path] = {}


def count(key: str) -> int:
    with calls_lock:
        calls[key] += 1
        return calls[key]


# --- activities ---------------------------------------------------------------------------


@bp.activity_trigger(input_name="spec")
def flaky(spec: dict[str, Any]) -> str:
    """Fails the first ``failures`` calls for ``key``, then succeeds."""
    n = count(spec["key"])
    if n <= spec["failures"]:
        raise RuntimeError(f"{spec['key']} attempt {n} failed")
    return f"{spec['key']} ok after {n} attempts"


@bp.activity_trigger(input_name="value")
def double(value: int) -> int:
    return value * 2


@bp.activity_trigger(input_name="value")
async def async_double(value: int) -> int:
    return value * 2


@bp.activity_trigger(input_name="step")
def logged_step(step: int) -> int:
    """Appends to the crash test's log, slowly enough to be killed in the middle."""
    with LOG["path"].open("a") as f:
        f.write(f"{step}\n")
    time.sleep(0.05)
    return step


# --- orchestrators ------------------------------------------------------------------------


@bp.orchestration_trigger(context_name="context")
def fan_out_in(context: df.DurableOrchestrationContext):
    values = context.get_input()
    results = yield context.task_all(
        [context.call_activity("double", v) for v in values]
        + [context.call_activity("async_double", v) for v in values]
    )
    return results


@bp.orchestration_trigger(context_name="context")
def with_retry(context: df.DurableOrchestrationContext):
    spec = context.get_input()
    options = (
        BackoffRetryOptions(spec["first_ms"], spec["attempts"], backoff_coefficient=2.0)
        if spec.get("backoff")
        else df.RetryOptions(spec["first_ms"], spec["attempts"])
    )
    return (yield context.call_activity_with_retry("flaky", options, spec))


@bp.orchestration_trigger(context_name="context")
def parallel_retries(context: df.DurableOrchestrationContext):
    """Retries interleaved with other tasks: the numbering must stay in step with the SDK."""
    tasks = [
        context.call_activity_with_retry(
            "flaky", df.RetryOptions(30, 3), {"key": f"{context.instance_id}-{i}", "failures": i}
        )
        for i in range(3)
    ] + [context.call_activity("double", 21)]
    first = yield context.task_all(tasks)
    after = yield context.call_activity("double", 1)
    return [*first, after]


@bp.orchestration_trigger(context_name="context")
def sleeper(context: df.DurableOrchestrationContext):
    seconds = context.get_input()
    start = context.current_utc_datetime
    yield context.create_timer(start + timedelta(seconds=seconds))
    return (context.current_utc_datetime - start).total_seconds()


@bp.orchestration_trigger(context_name="context")
def approval(context: df.DurableOrchestrationContext):
    """Waits for 'approve', raced against a timeout (the seeds' human approval)."""
    timeout = context.get_input()
    context.set_custom_status({"waiting_for": "approve"})
    deadline = context.create_timer(context.current_utc_datetime + timedelta(seconds=timeout))
    event = context.wait_for_external_event("approve")
    winner = yield context.task_any([event, deadline])
    if winner == event:
        deadline.cancel()
        context.set_custom_status({"waiting_for": None})
        return {"approved_by": event.result}
    return {"timed_out": True}


@bp.orchestration_trigger(context_name="context")
def parent(context: df.DurableOrchestrationContext):
    spec = context.get_input()
    child = yield context.call_sub_orchestrator("fan_out_in", spec["values"])
    try:
        yield context.call_sub_orchestrator("with_retry", spec["failing"])
        failure = None
    except Exception as exc:  # a failed sub-orchestration surfaces as an exception
        failure = str(exc)
    return {"child": child, "failure": failure}


@bp.orchestration_trigger(context_name="context")
def counter(context: df.DurableOrchestrationContext):
    n = context.get_input()
    yield context.call_activity("double", n)
    if n < 3:
        context.continue_as_new(n + 1)
        return None
    return n


@bp.orchestration_trigger(context_name="context")
def nondeterministic(context: df.DurableOrchestrationContext):
    """Picks its activity from state outside the context: a replay sees another choice."""
    replays[context.instance_id] += 1
    name = "double" if replays[context.instance_id] == 1 else "async_double"
    yield context.call_activity(name, 1)
    yield context.call_activity("double", 2)
    return "unreachable on Azure"


@bp.orchestration_trigger(context_name="context")
def crashable_chain(context: df.DurableOrchestrationContext):
    total = 0
    for step in range(context.get_input()):
        total += yield context.call_activity("logged_step", step)
    return total


def functions():
    """The test functions plus real ones of functions/, indexed as one app (like Azure)."""
    from functions.workflows_diagnostics import bp as diagnostics

    app = df.DFApp()
    app.register_functions(bp)
    app.register_functions(diagnostics)
    return app.get_functions()


def registry():
    from hartonomous.workflows.registry import Registry

    return Registry.from_functions(functions())


if __name__ == "__main__":  # the crash test's victim process
    from hartonomous.store import migrate
    from hartonomous.store.engine import create_engines
    from hartonomous.workflows.client import LocalDurableClient
    from hartonomous.workflows.host import LocalDurableHost

    db_url, log_path, steps = sys.argv[1], Path(sys.argv[2]), sys.argv[3]
    LOG["path"] = log_path
    engines = create_engines(db_url)
    migrate.upgrade(engines)
    host = LocalDurableHost(engines, registry()).start()
    if steps != "resume":
        instance = LocalDurableClient(host).start_new_sync(
            "crashable_chain", "crash-test", int(steps)
        )
    row = host.wait_for("crash-test", timeout=120)
    print(json.dumps({"status": row.runtime_status, "output": row.output}), flush=True)
    host.stop()
