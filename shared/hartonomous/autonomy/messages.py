"""What the loop's orchestrators hand their activities and get back: one dataclass in and
one out per activity, plain JSON through the Durable history (``to_json``/``from_json``).

Only ids, figures and the chosen problem's small evidence travel; rows stay in the store.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any, ClassVar, Self


class Message:
    """``to_json`` is ``asdict``; ``from_json`` rebuilds nested messages named in NESTED."""

    NESTED: ClassVar[dict[str, type[Message]]] = {}  # field: its message type (or a list)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)  # type: ignore[call-overload, no-any-return]

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Self:
        known = {f.name for f in fields(cls)}  # type: ignore[arg-type]
        values = {k: v for k, v in data.items() if k in known}
        for name, kind in cls.NESTED.items():
            value = values.get(name)
            if isinstance(value, list):
                values[name] = [kind.from_json(v) for v in value]
            elif isinstance(value, dict):
                values[name] = kind.from_json(value)
        return cls(**values)


# -- Analyze -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Problem(Message):
    kind: str  # ProblemKind
    key: str  # stable across runs: the run's ``handled`` list holds these
    score: float
    summary: str
    evidence: dict[str, Any]  # what the planner narrows its schema to (ids, the query)


@dataclass(frozen=True)
class AnalyzeIn(Message):
    tenant_id: str
    run_id: str
    iteration: int
    handled: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class AnalyzeOut(Message):
    problem: Problem | None
    considered: int  # problems found, before skips
    skipped: list[dict[str, str]]  # {key, reason}
    cost_credits: float
    ended: str | None = None  # the run was ended from outside (its status): stop here
    NESTED = {"problem": Problem}


# -- Hypothesize -------------------------------------------------------------------------------


@dataclass(frozen=True)
class HypothesizeIn(Message):
    tenant_id: str
    run_id: str
    iteration: int
    problem: Problem
    NESTED = {"problem": Problem}


@dataclass(frozen=True)
class PlannedAction(Message):
    id: str
    name: str
    needs_approval: bool
    cost_credits: float  # the registry's estimate: what Act is charged


@dataclass(frozen=True)
class HypothesizeOut(Message):
    actions: list[PlannedAction]  # usable: schema-valid, allowed, checked against the data
    refused: list[dict[str, str]]  # {id, name, decider, reason}
    planned_by: str  # model | deterministic | none
    cost_credits: float
    model_ms: float
    NESTED = {"actions": PlannedAction}


# -- Approval ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ApprovalIn(Message):
    tenant_id: str
    run_id: str
    iteration: int
    instance_id: str
    action_ids: list[str]
    requested_at: str  # the orchestrator's time: expires_at counts from it, as its timers do


@dataclass(frozen=True)
class ApprovalRequest(Message):
    approval_id: str
    action_id: str
    status: str  # pending, or approved at once by a policy rule
    decided_by: str | None
    expires_at: str  # ISO 8601 UTC


@dataclass(frozen=True)
class ApprovalOut(Message):
    requests: list[ApprovalRequest]
    ended: str | None = None  # the run was ended from outside (its status): stop here
    NESTED = {"requests": ApprovalRequest}


@dataclass(frozen=True)
class SettleIn(Message):
    tenant_id: str
    approval_id: str
    expire: bool  # the orchestrator's deadline passed: a pending request expires now


@dataclass(frozen=True)
class Decided(Message):
    """An approval's final status as the store holds it (a decision that raced the timer
    wins over the expiry)."""

    approval_id: str
    status: str
    decided_by: str | None


# -- the audit rows the orchestrator itself writes (approval, act) -----------------------------


@dataclass(frozen=True)
class PhaseIn(Message):
    tenant_id: str
    run_id: str
    iteration: int
    phase: str
    status: str
    inputs: dict[str, Any]
    outputs: dict[str, Any]
    decision: str | None
    decider: str | None
    cost_credits: float
    started_at: str  # orchestrator time, ISO 8601 UTC
    ended_at: str


# -- Act ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ActIn(Message):
    tenant_id: str
    action_id: str
    retry: bool = False  # a dead letter's retry: the action is dead_lettered, not approved
    key: str = ""  # a retry's key (names.retry_key): it keys its measurements' usage


@dataclass(frozen=True)
class Baseline(Message):
    """The metric before the action, or why the action is refused at the point of
    execution (its run ended, the policy disallows it now, its check fails): then nothing
    was measured and Act skips it."""

    action_id: str
    before: float | None
    cost_credits: float = 0.0  # the measurement's (its replayed usage, else the estimate)
    refused: str | None = None


@dataclass(frozen=True)
class ActOut(Message):
    action_id: str
    name: str
    applied: bool  # False: the action was no longer approved (nothing ran)
    result: dict[str, Any] | None
    refused: str | None = None  # why it was refused just before applying (as Baseline's)


@dataclass(frozen=True)
class DeadLetterIn(Message):
    tenant_id: str
    action_id: str
    error: str
    attempts: int


@dataclass(frozen=True)
class DeadLetterOut(Message):
    dead_letter_id: str
    on_action_failure: str  # continue | stop, as the policy says now


# -- Learn -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LearnIn(Message):
    tenant_id: str
    run_id: str
    iteration: int
    action_ids: list[str]
    retry: str | None = None  # a dead letter's retry key: measured under it, no phase row


@dataclass(frozen=True)
class Outcome(Message):
    action_id: str
    name: str
    before: float | None
    after: float | None
    improved: bool
    reverted: bool
    status: str  # kept | reverted | unchanged


@dataclass(frozen=True)
class LearnOut(Message):
    outcomes: list[Outcome]
    cost_credits: float
    NESTED = {"outcomes": Outcome}


# -- the end of a run, the schedule, a dead letter's retry -------------------------------------


@dataclass(frozen=True)
class FinishIn(Message):
    tenant_id: str
    run_id: str
    status: str
    iterations: int
    spent_credits: float
    summary: dict[str, Any]
    error: str | None = None


@dataclass(frozen=True)
class TenantIn(Message):
    tenant_id: str
    schedule: str = ""  # START_SCHEDULED: the schedule's instance id and the tick's due time,
    due: str = ""  # from which the tick's run id is derived (a re-run finds its own run)


@dataclass(frozen=True)
class ScheduleOut(Message):
    enabled: bool
    every_minutes: int


@dataclass(frozen=True)
class Started(Message):
    run_input: dict[str, Any] | None  # RunInput's JSON; None: no run started
    reason: str  # started | disabled | active_run | ended (the tick's run, ended meanwhile)


@dataclass(frozen=True)
class RetryIn(Message):
    """``names.RETRY_DEAD_LETTER``'s input, as the API starts it."""

    tenant_id: str
    dead_letter_id: str
    action_id: str
    retry_first_ms: int = 1000
    run_id: str = ""  # the run that parked it
    key: str = ""  # names.retry_key: the claim's attempts and time


@dataclass(frozen=True)
class ResolveIn(Message):
    tenant_id: str
    dead_letter_id: str
