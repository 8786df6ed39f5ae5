"""One dataclass in and one out per activity of an agent run (JSON through Durable)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Self


class _Json:
    def to_json(self) -> dict[str, Any]:
        return asdict(self)  # type: ignore[call-overload,no-any-return]

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Self:
        return cls(**data)


@dataclass(frozen=True)
class ThinkIn(_Json):
    tenant_id: str
    run_id: str
    step: int


@dataclass(frozen=True)
class ThinkOut(_Json):
    """What the platform decided about the model's step.

    ``verdict``: ``run`` (a tool call that runs now), ``approval`` (a tool call or an answer
    that waits for a human; ``step_id`` is what the approval is about), ``refused`` (a tool
    call whose arguments did not fit: the model is told), ``invalid`` (output that is not a
    step), ``violated`` (a rule ends the run), ``answered`` (an answer every rule let
    through), ``ended`` (the run had ended from outside: cancelled)."""

    verdict: str
    step_id: str | None
    cost_credits: float
    detail: str | None = None
    about: str | None = None  # what an approval is about: "tool" or "answer"


@dataclass(frozen=True)
class ApprovalIn(_Json):
    tenant_id: str
    run_id: str
    step_id: str
    instance_id: str
    reason: str


@dataclass(frozen=True)
class ApprovalOut(_Json):
    approval_id: str
    status: str  # pending, or already decided (a replay), or expired (the run ended)
    expires_at: str
    decided_by: str | None


@dataclass(frozen=True)
class SettleIn(_Json):
    tenant_id: str
    approval_id: str
    expire: bool  # the deadline passed: expire it if it is still pending


@dataclass(frozen=True)
class Settled(_Json):
    status: str
    decided_by: str | None


@dataclass(frozen=True)
class ToolIn(_Json):
    tenant_id: str
    run_id: str
    step_id: str


@dataclass(frozen=True)
class ToolOut(_Json):
    status: str  # executed | failed | violated | approval (the policy now asks) | ended
    cost_credits: float
    detail: str | None = None


@dataclass(frozen=True)
class FinishIn(_Json):
    tenant_id: str
    run_id: str
    status: str
    spent_credits: float
    answer_step_id: str | None = None  # the model step whose answer is released
    error: str | None = None


@dataclass(frozen=True)
class FinishOut(_Json):
    status: str  # what the run row says (a cancel that came first wins)
