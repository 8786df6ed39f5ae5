"""History events in the shape the Durable extension sends to out-of-process orchestrators.

Field names and event types follow the SDK's ``HistoryEvent`` and ``HistoryEventType`` (and
the repository's ``tests/test_utils/ContextBuilder.py``): every event has ``EventType``,
``EventId``, ``IsPlayed`` and ``Timestamp``; completions point at the event that scheduled
them through ``TaskScheduledId`` or ``TimerId``.
"""

from __future__ import annotations

import functools
import sys
from datetime import UTC, datetime
from typing import Any

from azure.durable_functions.models.history import HistoryEventType as T

Event = dict[str, Any]
NO_ID = -1


def timestamp(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _event(kind: T, moment: datetime, event_id: int = NO_ID, **fields: Any) -> Event:
    return {
        "EventType": int(kind),
        "EventId": event_id,
        "IsPlayed": False,
        "Timestamp": timestamp(moment),
        **fields,
    }


def orchestrator_started(moment: datetime) -> Event:
    return _event(T.ORCHESTRATOR_STARTED, moment)


def orchestrator_completed(moment: datetime) -> Event:
    return _event(T.ORCHESTRATOR_COMPLETED, moment)


def execution_started(
    moment: datetime, name: str, input_json: str | None, parent: dict[str, Any] | None
) -> Event:
    fields: dict[str, Any] = {"Name": name, "Input": input_json, "Version": ""}
    if parent:
        fields["ParentInstance"] = parent
    return _event(T.EXECUTION_STARTED, moment, **fields)


def execution_terminated(moment: datetime, reason: str) -> Event:
    return _event(T.EXECUTION_TERMINATED, moment, Input=reason)


def task_scheduled(moment: datetime, event_id: int, name: str, input_json: str | None) -> Event:
    return _event(T.TASK_SCHEDULED, moment, event_id, Name=name, Input=input_json)


def task_completed(moment: datetime, scheduled_id: int, result_json: str | None) -> Event:
    return _event(T.TASK_COMPLETED, moment, TaskScheduledId=scheduled_id, Result=result_json)


def task_failed(moment: datetime, scheduled_id: int, reason: str, details: str) -> Event:
    return _event(
        T.TASK_FAILED, moment, TaskScheduledId=scheduled_id, Reason=reason, Details=details
    )


def timer_created(moment: datetime, event_id: int, fire_at: datetime) -> Event:
    return _event(T.TIMER_CREATED, moment, event_id, FireAt=timestamp(fire_at))


def timer_fired(moment: datetime, timer_id: int, fire_at: datetime) -> Event:
    return _event(T.TIMER_FIRED, moment, TimerId=timer_id, FireAt=timestamp(fire_at))


def event_raised(moment: datetime, name: str, input_json: str | None) -> Event:
    return _event(T.EVENT_RAISED, moment, Name=name, Input=input_json)


def sub_orchestration_created(
    moment: datetime, event_id: int, name: str, instance_id: str, input_json: str | None
) -> Event:
    return _event(
        T.SUB_ORCHESTRATION_INSTANCE_CREATED,
        moment,
        event_id,
        Name=name,
        InstanceId=instance_id,
        Input=input_json,
    )


def sub_orchestration_completed(
    moment: datetime, scheduled_id: int, result_json: str | None
) -> Event:
    return _event(
        T.SUB_ORCHESTRATION_INSTANCE_COMPLETED,
        moment,
        TaskScheduledId=scheduled_id,
        Result=result_json,
    )


def sub_orchestration_failed(
    moment: datetime, scheduled_id: int, reason: str, details: str
) -> Event:
    return _event(
        T.SUB_ORCHESTRATION_INSTANCE_FAILED,
        moment,
        TaskScheduledId=scheduled_id,
        Reason=reason,
        Details=details,
    )


def cache_sdk_timestamp_parsing(maxsize: int = 1 << 18) -> None:
    """Memoise the SDK's timestamp parser: replay re-parses every event on every episode.

    ``HistoryEvent`` parses ``Timestamp`` with dateutil, about 40 us an event: 90% of replay
    time, and replay is quadratic in history length. The strings repeat exactly across
    episodes, so caching the pure parse function (``datetime`` is immutable) changes no
    result and makes a 1,000-step chain about five times faster.
    """
    module = sys.modules["azure.durable_functions.models.history.HistoryEvent"]
    parse = getattr(module, "dt_parse")  # noqa: B009 - untyped module attribute
    if not hasattr(parse, "cache_info"):
        setattr(module, "dt_parse", functools.lru_cache(maxsize=maxsize)(parse))  # noqa: B010
