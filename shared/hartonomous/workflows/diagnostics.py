"""Diagnostics workflows: exercise the workflow engine end to end with no side effects.

Operators start them to check a deployment (and ``bench/`` measures the engine with them):
a fan-out of no-op activities, and a sequential chain of them.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

import azure.durable_functions as df

FAN_OUT = "diagnostics_fan_out"
CHAIN = "diagnostics_chain"
NOOP = "diagnostics_noop"

Orchestration = Generator[Any, Any, dict[str, int]]


def _count(context: df.DurableOrchestrationContext) -> int:
    count = int((context.get_input() or {}).get("count", 10))
    if not 0 <= count <= 100_000:
        raise ValueError("count must be between 0 and 100000")
    return count


def fan_out(context: df.DurableOrchestrationContext) -> Orchestration:
    """``count`` no-op activities at once, then fan in."""
    count = _count(context)
    results = yield context.task_all([context.call_activity(NOOP, i) for i in range(count)])
    return {"completed": len(results), "checksum": sum(results)}


def chain(context: df.DurableOrchestrationContext) -> Orchestration:
    """``count`` no-op activities one after another; custom status shows progress."""
    count = _count(context)
    total = 0
    for i in range(count):
        total += yield context.call_activity(NOOP, i)
        if i % 100 == 99:
            context.set_custom_status({"done": i + 1, "of": count})
    return {"completed": count, "checksum": total}


def noop(value: int) -> int:
    return value
