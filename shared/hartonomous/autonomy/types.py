"""The loop's vocabulary: statuses of runs, actions and approvals, and the phases."""

from __future__ import annotations

from enum import StrEnum


class Phase(StrEnum):
    ANALYZE = "analyze"
    HYPOTHESIZE = "hypothesize"
    APPROVAL = "approval"
    ACT = "act"
    LEARN = "learn"


class RunStatus(StrEnum):
    RUNNING = "running"
    COMPLETED = "completed"  # its iterations ran out
    NOTHING_TO_DO = "nothing_to_do"  # Analyze found no problem worth an action
    BUDGET_EXHAUSTED = "budget_exhausted"  # the next phase would pass the credit budget
    DURATION_EXHAUSTED = "duration_exhausted"  # the next phase would pass the duration limit
    STOPPED = "stopped"  # an action failed and the policy says stop
    FAILED = "failed"  # the orchestration itself failed (a bug, not an action)
    TERMINATED = "terminated"  # an operator terminated its workflow

    @property
    def active(self) -> bool:
        return self is RunStatus.RUNNING


class ActionStatus(StrEnum):
    PLANNED = "planned"
    REFUSED = "refused"  # schema-invalid, unknown, or disallowed by policy: never executed
    AWAITING_APPROVAL = "awaiting_approval"
    APPROVED = "approved"
    REJECTED = "rejected"
    EXPIRED = "expired"
    APPLIED = "applied"  # executed; Learn has not judged it yet
    KEPT = "kept"  # Learn measured an improvement
    REVERTED = "reverted"  # Learn measured none and undid it
    UNCHANGED = "unchanged"  # no improvement, and the action cannot be undone
    DEAD_LETTERED = "dead_lettered"  # still failing after its retries


class ApprovalStatus(StrEnum):
    PENDING = "pending"
    APPROVED = "approved"
    REJECTED = "rejected"
    EXPIRED = "expired"


class DeadLetterStatus(StrEnum):
    PARKED = "parked"
    RETRYING = "retrying"
    RESOLVED = "resolved"
    DISCARDED = "discarded"


class ProblemKind(StrEnum):
    """What Analyze finds, each with the action that addresses it."""

    KNOWLEDGE_GAP = "knowledge_gap"
    NEAR_DUPLICATES = "near_duplicates"
    FAILED_WORKFLOW = "failed_workflow"
    REPEATED_PROMPT = "repeated_prompt"
    UNCLUSTERED_CHUNKS = "unclustered_chunks"  # chunks that belong to no concept
