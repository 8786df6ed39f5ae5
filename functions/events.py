"""The outbox relay on Azure: a timer drains committed events to Event Hubs (locally a relay
thread in ``hartonomous serve`` does it as soon as they commit; code in hartonomous.events)."""

from __future__ import annotations

import logging

import azure.durable_functions as df
import azure.functions as func

from functions import runtime

bp = df.Blueprint()
log = logging.getLogger(__name__)


@bp.timer_trigger(schedule="*/10 * * * * *", arg_name="timer", run_on_startup=False)
def relay_outbox(timer: func.TimerRequest) -> None:
    """Every 10 s: publish what the outbox holds, oldest first; failures stay pending."""
    sent = runtime.platform().outbox.drain()
    if sent:
        log.info("published %d outbox events (past due: %s)", sent, timer.past_due)
