"""Names an agent run's orchestration and activities share with the API that starts it."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from hartonomous.autonomy.registry import AGENT_TOOLS
from hartonomous.metering.pricing import price

RUN = "agent_run"  # one run: think, judge, (approval), tool, ... until an answer or a cap
THINK = "agent_think"
REQUEST_APPROVAL = "agent_request_approval"
SETTLE_APPROVAL = "agent_settle_approval"
TOOL = "agent_tool"
FINISH = "agent_finish"

PROMPT_TOKENS_ESTIMATE = 1536  # the most of a step's prompt (think trims what it holds)
SEARCH_CREDITS = price({"search.queries": 1}).credits


def step_credits(max_tokens_per_step: int) -> float:
    """What one step is estimated to cost before it runs: a full prompt, every completion
    token the agent allows, its retrieval and the dearest tool call. A budget under this
    cannot start a run."""
    tokens = {
        "generation.prompt_tokens": PROMPT_TOKENS_ESTIMATE,
        "generation.completion_tokens": max_tokens_per_step,
    }
    tool = max(spec.cost_credits for spec in AGENT_TOOLS.values())
    return round(price(tokens).credits + SEARCH_CREDITS + tool, 6)


def run_instance_id(run_id: str) -> str:
    return f"agent-{run_id}"


@dataclass(frozen=True)
class RunInput:
    """The run orchestration's input."""

    tenant_id: str
    run_id: str
    started_at: str  # ISO 8601, UTC: max_duration_s counts from here, approval waits excluded
    budget_credits: float  # the credit cap (the smaller of the budget and max_credits rules)
    max_steps: int  # the step cap (the smaller of the budget and max_steps rules)
    max_duration_s: int
    step_credits: float  # the estimate gated before each step
    retry_first_ms: int = 1000

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RunInput:
        return cls(**data)
