"""The billing orchestrations: a Stripe event's work, and the postpaid billing run.

``billing_run`` (one instance per period, ``billing-{period}``, started by the monthly timer)
lists the postpaid tenants and bills each in a sub-orchestration of its own, in waves; a
tenant whose billing still fails after its retries (Stripe unreachable for long) is recorded
in ``workflow_failures`` (the dead letters ``retry_failed_workflow`` re-runs) and the run
goes on with the others. Nothing is half-billed: billing resumes from the invoice row.
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass
from typing import Any

import azure.durable_functions as df

from hartonomous.store.workflow_failures import RECORD_FAILURE
from hartonomous.workflows.actions import BackoffRetryOptions

STRIPE_EVENT = "billing_stripe_event"
BILLING_RUN = "billing_run"
BILL_TENANT = "billing_bill_tenant"
APPLY_EVENT = "billing_apply_event"
DUE = "billing_due"
BILL = "billing_bill"
RECONCILE = "billing_reconcile"

WAVE = 16  # tenants billed at once: Stripe's rate limit is 100 requests a second in live mode
ATTEMPTS = 6  # with backoff from retry_first_ms, doubling, capped at 5 minutes
MAX_RETRY_MS = 5 * 60 * 1000


@dataclass(frozen=True)
class BillingRunInput:
    period: dict[str, str]  # Period.to_json()
    retry_first_ms: int = 5000

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> BillingRunInput:
        return cls(dict(data["period"]), int(data.get("retry_first_ms", 5000)))


def retry(first_ms: int) -> BackoffRetryOptions:
    return BackoffRetryOptions(
        first_ms, ATTEMPTS, backoff_coefficient=2.0, max_retry_interval_in_milliseconds=MAX_RETRY_MS
    )


Orchestration = Generator[Any, Any, dict[str, Any]]


def stripe_event(context: df.DurableOrchestrationContext) -> Orchestration:
    """One verified webhook event's work (instance ``stripe-{event id}``)."""
    job = context.get_input()  # {event: {id, type, object}, retry_first_ms}
    try:
        outcome = yield context.call_activity_with_retry(
            APPLY_EVENT, retry(int(job.get("retry_first_ms", 5000))), job["event"]
        )
    except Exception as exc:
        tenant = ((job["event"].get("object") or {}).get("metadata") or {}).get("tenant_id")
        if tenant:
            yield context.call_activity(RECORD_FAILURE, _failure(context, STRIPE_EVENT, tenant,
                                                                 job, exc))  # fmt: skip
        raise
    return {"event_id": job["event"]["id"], "outcome": outcome}


def billing_run(context: df.DurableOrchestrationContext) -> Orchestration:
    inp = BillingRunInput.from_json(context.get_input())
    tenants: list[str] = yield context.call_activity(DUE, inp.period)
    context.set_custom_status({"tenants": len(tenants), "done": 0})
    results: list[dict[str, Any]] = []
    for i in range(0, len(tenants), WAVE):
        wave = [
            context.call_sub_orchestrator(
                BILL_TENANT,
                {"tenant_id": tenant, "period": inp.period, "retry_first_ms": inp.retry_first_ms},
                f"{context.instance_id}:{tenant}",
            )
            for tenant in tenants[i : i + WAVE]
        ]
        results.extend((yield context.task_all(wave)))
        context.set_custom_status({"tenants": len(tenants), "done": len(results)})
    failed = [r["tenant_id"] for r in results if r.get("failed")]
    billed = [r for r in results if r.get("status") == "paid"]
    return {
        "period": inp.period["period"],
        "tenants": len(tenants),
        "billed": len(billed),
        "cents": sum(int(r.get("amount_cents") or 0) for r in billed),
        "failed": failed,
        "differences": [r["tenant_id"] for r in results if r.get("difference_cents")],
    }


def bill_tenant(context: df.DurableOrchestrationContext) -> Orchestration:
    job = context.get_input()  # {tenant_id, period, retry_first_ms}
    options = retry(int(job["retry_first_ms"]))
    try:
        billed = yield context.call_activity_with_retry(BILL, options, job)
        reconciled = yield context.call_activity_with_retry(RECONCILE, options, job)
    except Exception as exc:
        yield context.call_activity(
            RECORD_FAILURE, _failure(context, BILL_TENANT, job["tenant_id"], job, exc)
        )
        return {"tenant_id": job["tenant_id"], "failed": str(exc)[:500]}
    return {**billed, "difference_cents": reconciled.get("difference_cents")}


def _failure(
    context: df.DurableOrchestrationContext, name: str, tenant_id: str, job: Any, exc: Exception
) -> dict[str, Any]:
    return {"instance_id": context.instance_id, "name": name, "tenant_id": tenant_id,
            "input": job, "error": str(exc)}  # fmt: skip
