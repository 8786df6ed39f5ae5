"""Billing: Stripe events' workflow, the monthly postpaid run, the hold sweep (code in
hartonomous.billing)."""

from __future__ import annotations

import logging
from typing import Any

import azure.durable_functions as df
import azure.functions as func

from functions import runtime
from hartonomous.billing import workflow
from hartonomous.billing.payment_types import PaymentEvent
from hartonomous.billing.payments_service import Period
from hartonomous.services.clock import utcnow

bp = df.Blueprint()
log = logging.getLogger(__name__)


@bp.orchestration_trigger(context_name="context", orchestration=workflow.STRIPE_EVENT)
def billing_stripe_event(context: df.DurableOrchestrationContext) -> Any:
    return (yield from workflow.stripe_event(context))


@bp.orchestration_trigger(context_name="context", orchestration=workflow.BILLING_RUN)
def billing_run(context: df.DurableOrchestrationContext) -> Any:
    return (yield from workflow.billing_run(context))


@bp.orchestration_trigger(context_name="context", orchestration=workflow.BILL_TENANT)
def billing_bill_tenant(context: df.DurableOrchestrationContext) -> Any:
    return (yield from workflow.bill_tenant(context))


@bp.activity_trigger(input_name="event", activity=workflow.APPLY_EVENT)
def billing_apply_event(event: dict[str, Any]) -> str:
    return runtime.platform().payments.apply(
        PaymentEvent(event["id"], event["type"], event["object"])
    )


@bp.activity_trigger(input_name="period", activity=workflow.DUE)
def billing_due(period: dict[str, str]) -> list[str]:
    return runtime.platform().payments.due(Period.from_json(period))


@bp.activity_trigger(input_name="job", activity=workflow.BILL)
def billing_bill(job: dict[str, Any]) -> dict[str, Any]:
    return runtime.platform().payments.bill(job["tenant_id"], Period.from_json(job["period"]))


@bp.activity_trigger(input_name="job", activity=workflow.RECONCILE)
def billing_reconcile(job: dict[str, Any]) -> dict[str, Any]:
    return runtime.platform().payments.reconcile(job["tenant_id"], Period.from_json(job["period"]))


@bp.timer_trigger(schedule="0 30 0 1 * *", arg_name="timer", run_on_startup=False)
@bp.durable_client_input(client_name="client")
async def billing_monthly(timer: func.TimerRequest, client: df.DurableOrchestrationClient) -> None:
    """00:30 UTC on the 1st: bill last month's postpaid usage. One instance per period: a
    timer that fires twice (or late, past due) finds it started."""
    platform = runtime.platform()
    if not platform.payments.on:
        return
    period = Period.month_before(utcnow())
    instance_id = f"billing-{period.label}"
    status = await client.get_status(instance_id)
    if status is not None and status.runtime_status is not None:
        log.info("billing run %s exists (%s)", instance_id, status.runtime_status)
        return
    await client.start_new(
        workflow.BILLING_RUN,
        instance_id,
        {"period": period.to_json(), "retry_first_ms": platform.settings.billing_retry_first_ms},
    )


@bp.timer_trigger(schedule="0 */10 * * * *", arg_name="timer", run_on_startup=False)
def sweep_credit_holds(timer: func.TimerRequest) -> None:
    """Every 10 minutes: release credits held by work whose server died before settling."""
    report = runtime.platform().credits.sweep()
    log.info("credit holds: %s (past due: %s)", report, timer.past_due)
