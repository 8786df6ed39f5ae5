"""Names the loop's orchestrations, events and instances share with the API that starts them."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

RUN = "autonomy_run"  # one run: Analyze, Hypothesize, Approval, Act, Learn; continue-as-new
SCHEDULE = "autonomy_schedule"  # one per tenant with a schedule: a timer, then a run
RETRY_DEAD_LETTER = "autonomy_retry_dead_letter"  # re-runs one parked action


def run_instance_id(run_id: str) -> str:
    return f"autonomy-{run_id}"


def schedule_instance_id(tenant_id: str) -> str:
    return f"autonomy-schedule-{tenant_id}"


def retry_key(attempts: int, claimed_at: datetime) -> str:
    """One claim of a dead letter for a retry: its attempts so far and the claim's time
    (the letter's ``updated_at`` while it is retrying, so it can be found from the row)."""
    return f"retry-{attempts}-{claimed_at:%Y%m%d%H%M%S%f}"


def retry_instance_id(letter_id: str, attempts: int, claimed_at: datetime) -> str:
    """A dead letter's retry: one instance per claim."""
    return f"autonomy-retry-{letter_id}-{retry_key(attempts, claimed_at)[6:]}"


def approval_event(approval_id: str) -> str:
    """The external event that carries an admin's decision to the waiting run."""
    return f"approval-{approval_id}"


@dataclass(frozen=True)
class RunInput:
    """The run orchestration's input; continue-as-new hands the next iteration a copy."""

    tenant_id: str
    run_id: str
    started_at: str  # ISO 8601, UTC: the duration limit counts from here
    budget_credits: float
    max_duration_s: int
    max_iterations: int
    iteration: int = 1
    spent_credits: float = 0.0
    retry_first_ms: int = 1000  # Act's retries wait 1, 2, 4, 8, 16 s by default
    handled: list[str] = field(default_factory=list)  # problem keys earlier iterations took
    waited_s: float = 0.0  # time spent waiting for approvals: not counted in the duration

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RunInput:
        return cls(**data)
