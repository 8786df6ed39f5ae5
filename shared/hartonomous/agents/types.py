"""The agent factory's vocabulary: statuses of names, runs, steps, and violation outcomes."""

from __future__ import annotations

from enum import StrEnum


class AgentStatus(StrEnum):
    ACTIVE = "active"
    RETIRED = "retired"  # no new runs; its versions and runs stay readable


class RunStatus(StrEnum):
    RUNNING = "running"
    ANSWERED = "answered"  # the model gave an answer every output rule let through
    VIOLATED = "violated"  # a constitution rule ended it (or its approval was refused)
    STEPS_EXHAUSTED = "steps_exhausted"  # max_steps reached without an answer
    BUDGET_EXHAUSTED = "budget_exhausted"  # the next step would pass the credit cap
    DURATION_EXHAUSTED = "duration_exhausted"  # max_duration_s passed (approval waits excluded)
    CANCELLED = "cancelled"  # POST .../cancel
    FAILED = "failed"  # the orchestration itself failed (a bug, or the model unavailable)

    @property
    def active(self) -> bool:
        return self is RunStatus.RUNNING


class StepKind(StrEnum):
    MODEL = "model"  # the model chose the next step (a generation receipt)
    TOOL = "tool"  # the platform's decision on a tool call, and its result


class StepStatus(StrEnum):
    # model steps
    CHOSE_TOOL = "chose_tool"
    ANSWERED = "answered"  # an answer the output rules let through
    INVALID = "invalid"  # output that is not a valid step (not JSON, wrong shape)
    VIOLATED = "violated"  # an answer an output rule refused
    # tool steps
    REFUSED = "refused"  # forbidden (allow-list, policy, constitution, schema): never ran
    AWAITING_APPROVAL = "awaiting_approval"
    APPROVED = "approved"
    REJECTED = "rejected"  # a human said no: never ran
    EXPIRED = "expired"  # nobody decided in time, or the run ended first: never ran
    EXECUTING = "executing"  # claimed by the tool activity while its run was running
    EXECUTED = "executed"
    FAILED = "failed"  # ran and raised; the model is told


class ViolationOutcome(StrEnum):
    END = "end"  # the run ends violated
    APPROVAL = "approval"  # a human decides whether the step goes ahead
