"""Reading the actions an orchestrator episode returns.

With replay schema V2 the SDK returns ``actions`` as one cumulative list (every action since
the execution started, not only the new ones), where ``task_all``/``task_any`` are compound
actions holding their children. Flattened depth-first, that list is in exactly the order in
which the SDK handed out task ids, which is how the host numbers its history events.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from azure.durable_functions import RetryOptions
from azure.durable_functions.models.actions import ActionType as A

Action = dict[str, Any]

# Actions that take a task id (sequence number) in the SDK, hence an EventId in history.
NUMBERED = {
    A.CALL_ACTIVITY,
    A.CALL_ACTIVITY_WITH_RETRY,
    A.CALL_SUB_ORCHESTRATOR,
    A.CALL_SUB_ORCHESTRATOR_WITH_RETRY,
    A.CREATE_TIMER,
    A.CALL_ENTITY,
    A.CALL_HTTP,
    A.SIGNAL_ENTITY,
}
UNSUPPORTED = {A.CALL_ENTITY, A.CALL_HTTP, A.SIGNAL_ENTITY}


def flatten(state_actions: list[Any]) -> list[Action]:
    """Atomic actions in id order, from the ``actions`` of an orchestrator state."""
    out: list[Action] = []

    def walk(item: Any) -> None:
        if isinstance(item, list):
            for child in item:
                walk(child)
        elif "compoundActions" in item:
            walk(item["compoundActions"])
        else:
            out.append(item)

    walk(state_actions)
    return out


def fingerprint(action: Action) -> str:
    """What must be identical on every replay (inputs may differ; cancellation may change)."""
    kind = A(action["actionType"])
    name = action.get("functionName") or action.get("externalEventName") or ""
    return f"{kind.name}:{name}"


def describe(fp: str) -> str:
    kind, _, name = fp.partition(":")
    return f"{kind.lower()} {name!r}" if name else kind.lower()


@dataclass(frozen=True)
class RetryPolicy:
    """The retry options of a ``*_with_retry`` action, with the extension's defaults."""

    first_interval_ms: int
    max_attempts: int
    backoff_coefficient: float = 1.0
    max_interval_ms: int | None = None
    timeout_ms: int | None = None

    @classmethod
    def of(cls, options: dict[str, Any]) -> RetryPolicy:
        return cls(
            first_interval_ms=int(options["firstRetryIntervalInMilliseconds"]),
            max_attempts=int(options["maxNumberOfAttempts"]),
            backoff_coefficient=float(options.get("backoffCoefficient", 1.0)),
            max_interval_ms=options.get("maxRetryIntervalInMilliseconds"),
            timeout_ms=options.get("retryTimeoutInMilliseconds"),
        )

    def delay(self, attempt: int) -> timedelta:
        """Wait after failed attempt number ``attempt`` (1-based), as DTFx computes it."""
        ms = self.first_interval_ms * self.backoff_coefficient ** (attempt - 1)
        if self.max_interval_ms is not None:
            ms = min(ms, self.max_interval_ms)
        return timedelta(milliseconds=ms)

    def gives_up(self, attempt: int, first_started: datetime, now: datetime) -> bool:
        if attempt >= self.max_attempts:
            return True
        if self.timeout_ms is None:
            return False
        return now - first_started >= timedelta(milliseconds=self.timeout_ms)


class BackoffRetryOptions(RetryOptions):  # type: ignore[misc]
    """``RetryOptions`` with exponential backoff, a cap and a timeout.

    The Python SDK only sends the first interval and the attempt count; the extension also
    reads ``backoffCoefficient``, ``maxRetryIntervalInMilliseconds`` and
    ``retryTimeoutInMilliseconds``, so this subclass adds them to the same JSON.
    """

    def __init__(
        self,
        first_retry_interval_in_milliseconds: int,
        max_number_of_attempts: int,
        *,
        backoff_coefficient: float = 2.0,
        max_retry_interval_in_milliseconds: int | None = None,
        retry_timeout_in_milliseconds: int | None = None,
    ) -> None:
        super().__init__(first_retry_interval_in_milliseconds, max_number_of_attempts)
        self.backoff_coefficient = backoff_coefficient
        self.max_retry_interval_in_milliseconds = max_retry_interval_in_milliseconds
        self.retry_timeout_in_milliseconds = retry_timeout_in_milliseconds

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = super().to_json()
        data["backoffCoefficient"] = self.backoff_coefficient
        if self.max_retry_interval_in_milliseconds is not None:
            data["maxRetryIntervalInMilliseconds"] = self.max_retry_interval_in_milliseconds
        if self.retry_timeout_in_milliseconds is not None:
            data["retryTimeoutInMilliseconds"] = self.retry_timeout_in_milliseconds
        return data
