"""What every action executor provides: apply, revert, measure; idempotent by action id."""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from typing import Any

from hartonomous.autonomy.registry import ActionSpec


@dataclass(frozen=True)
class ActionContext:
    tenant_id: str
    run_id: str
    action_id: str  # the idempotency key: applying twice has the effect of once
    parameters: dict[str, Any]
    # What the call is for: "before" (the loop's baseline, measured before apply), "after"
    # (Learn's measurement, and the revert it may decide), "measure" otherwise (Act's check
    # and apply). Only measure reads it: it keys the usage of the searches and generations a
    # measurement replays (``request_key``), so the baseline and Learn are metered apart,
    # each once however often its activity is replayed.
    purpose: str = "measure"


@dataclass(frozen=True)
class Measurement:
    """The action's metric, recomputed from the platform's records (higher is better)."""

    value: float
    details: dict[str, Any] = field(default_factory=dict)


class ActionExecutor(abc.ABC):
    spec: ActionSpec

    @abc.abstractmethod
    def check(self, ctx: ActionContext) -> None:
        """Refuse (422/404) parameters that fit the schema but not the tenant's data, before
        anything runs: an atom that is not the tenant's, a workflow that did not fail."""

    @abc.abstractmethod
    def apply(self, ctx: ActionContext) -> dict[str, Any]:
        """Do it, once: a second call with the same action id changes nothing and answers
        the first call's result. The result is small JSON (ids, counts)."""

    def revert(self, ctx: ActionContext, result: dict[str, Any]) -> None:
        """Undo ``apply`` (idempotent); only for reversible actions."""
        raise NotImplementedError(f"{self.spec.name} cannot be reverted")

    @abc.abstractmethod
    def measure(self, ctx: ActionContext) -> Measurement:
        """The metric now, from the platform's own records (replayed searches, receipts)."""
