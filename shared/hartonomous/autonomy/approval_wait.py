"""Waiting for a human's decision inside an orchestration: the loop's runs and agents' runs.

The decision is the store's (an activity reads it, and past the deadline expires a pending
request compare-and-set); the ``approval-<id>`` external event only wakes the wait. Rules:

- the wait races the event against a timer at ``min(deadline, now + TIMER_CAP)`` (one
  Durable timer cannot be longer), in a loop, until the deadline;
- an event that decided nothing (the store still says pending) is not waited on again: the
  SDK keeps an event raised before anyone waited and never drops it, so every later wait for
  that name would win at once; the wait then polls the store every ``POLL_INTERVAL``.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from datetime import datetime, timedelta
from typing import Any

import azure.durable_functions as df

from hartonomous.autonomy.names import approval_event

TIMER_CAP = timedelta(days=6)  # the Python SDK's longest single timer
POLL_INTERVAL = timedelta(minutes=5)  # after an event that decided nothing: poll the store


def decision(
    context: df.DurableOrchestrationContext,
    approval_id: str,
    deadline: datetime,
    settle: Callable[[bool], Any],
) -> Generator[Any, Any, dict[str, Any]]:
    """The settling activity's answer (its JSON, with ``status``) once it is no longer
    pending. ``settle(expire)`` schedules that activity; ``expire`` is true once the deadline
    has passed."""
    event_name = approval_event(approval_id)
    woken = False  # an event woke the wait but decided nothing: poll from then on
    while True:
        now = context.current_utc_datetime
        expire = now >= deadline
        if not expire and woken:
            yield context.create_timer(min(deadline, now + POLL_INTERVAL))
            expire = context.current_utc_datetime >= deadline
        elif not expire:
            timer = context.create_timer(min(deadline, now + TIMER_CAP))
            event = context.wait_for_external_event(event_name)
            winner = yield context.task_any([event, timer])
            if winner != event:
                continue  # a capped timer fired before the deadline: wait again
            timer.cancel()
            woken = True
        settled: dict[str, Any] = yield settle(expire)
        if settled["status"] != "pending":
            return settled
