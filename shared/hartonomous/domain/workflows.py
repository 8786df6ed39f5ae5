"""Workflow instances as tenants see them."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

# Runtime statuses after which an instance accepts no events (the SDK's names).
FINISHED = frozenset({"Completed", "Failed", "Terminated", "Canceled"})


@dataclass(frozen=True, slots=True)
class WorkflowRun:
    """Which tenant started an instance: the Durable backend itself knows no tenants."""

    instance_id: str
    tenant_id: str
    name: str
    created_at: datetime


@dataclass(frozen=True, slots=True)
class WorkflowStatus:
    instance_id: str
    name: str
    runtime_status: str
    custom_status: Any
    input: Any
    output: Any
    created_time: datetime | None
    last_updated_time: datetime | None
    error: str | None

    @property
    def finished(self) -> bool:
        return self.runtime_status in FINISHED
