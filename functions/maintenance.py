"""Timer-triggered housekeeping (code in hartonomous.services.maintenance)."""

from __future__ import annotations

import logging

import azure.durable_functions as df
import azure.functions as func

from functions import runtime
from hartonomous.services import maintenance

bp = df.Blueprint()
log = logging.getLogger(__name__)


@bp.timer_trigger(schedule="0 17 * * * *", arg_name="timer", run_on_startup=False)
def sweep_staging(timer: func.TimerRequest) -> None:
    """Hourly: staged uploads older than a day were abandoned by a crash; delete them."""
    removed = maintenance.sweep_staging(runtime.platform().blobs)
    log.info("swept %d abandoned staged uploads (past due: %s)", removed, timer.past_due)


@bp.timer_trigger(schedule="0 */5 * * * *", arg_name="timer", run_on_startup=False)
def collect_blobs(timer: func.TimerRequest) -> None:
    """Every 5 minutes: delete the bytes of deleted atoms (queued by their commit) and the
    bytes of transactions that failed after publishing (the blob store's journal)."""
    platform = runtime.platform()
    report = maintenance.collect_blobs(platform.uow_factory, platform.blobs)
    log.info(
        "blob lifecycle: %d deleted, %d kept, %d failed (past due: %s)",
        report.deleted,
        report.kept,
        report.failed,
        timer.past_due,
    )
