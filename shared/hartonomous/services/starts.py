"""What a workflow's status says, and whether a start that raised started all the same."""

from __future__ import annotations

import logging
from typing import Any

from hartonomous.ports import WorkflowClient

log = logging.getLogger(__name__)


def runtime_status(status: Any) -> str | None:
    """The SDK status's runtime status by name; None when the instance has no state."""
    if not status or status.runtime_status is None:
        return None
    return str(status.runtime_status.value)


async def started_anyway(
    client: WorkflowClient, instance_id: str, error: BaseException
) -> bool | None:
    """After ``start_new`` raised: did the instance start all the same (the request went
    through, its answer was lost)? False only when it has no state: then it did not start.
    None when even the look fails: unknown, so nothing is undone (a run left active is
    ended by the stale-run rule, a letter left retrying is parked again after the grace)."""
    try:
        runtime = runtime_status(await client.get_status(instance_id))
    except Exception:
        log.warning("could not tell whether %s started", instance_id, exc_info=True)
        return None
    if runtime is None:
        return False
    log.warning("starting %s raised (%s), but it has started (%s)", instance_id, error, runtime)
    return True
