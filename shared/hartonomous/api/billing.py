"""Billing: the tenant's plan (docs/serving.md), credits, invoices, top-ups, and Stripe's
webhook (docs/billing.md)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Request
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, ConfigDict, Field

from hartonomous.api.auth import Admin, Reader
from hartonomous.api.deps import PlatformDep, WorkflowClientDep
from hartonomous.api.problems import PROBLEM_RESPONSES, documented
from hartonomous.billing.money import to_credits
from hartonomous.billing.service import balance_json
from hartonomous.billing.workflow import STRIPE_EVENT

router = APIRouter(tags=["billing"])


class PlanOut(BaseModel):
    requests_per_second: float = Field(description="Requests a second, on average")
    burst: int = Field(description="Requests at once after a pause (the bucket's size)")
    concurrent_generations: int = Field(description="Generations running or queued at once")
    tokens_per_minute: int = Field(description="Model tokens (prompt and output) a minute")
    defaults: list[str] = Field(
        description="The limits that are the default plan's (the others were set for you)"
    )


@router.get("/v1/billing/plan", response_model=PlanOut, responses=PROBLEM_RESPONSES)
async def plan(principal: Reader, platform: PlatformDep) -> PlanOut:
    """Your plan's limits; over one, a request is answered 429 with Retry-After."""
    found = await run_in_threadpool(platform.admission.tenant_plan, principal.tenant_id)
    p = found.plan
    return PlanOut(
        requests_per_second=p.requests_per_second,
        burst=p.burst,
        concurrent_generations=p.concurrent_generations,
        tokens_per_minute=p.tokens_per_minute,
        defaults=sorted(found.defaults),
    )


# -- credits ----------------------------------------------------------------------------------

Limit = Annotated[int, Query(ge=1, le=100, description="Items per page")]
Cursor = Annotated[
    str | None, Query(max_length=512, description="`next_cursor` of the previous page")
]
IdempotencyKey = Annotated[
    str | None,
    Header(
        min_length=1, max_length=200, pattern=r"^[\x21-\x7e]+$",
        description="The same key twice makes one payment (Stripe's idempotency key)",
    ),
]  # fmt: skip


class BalanceOut(BaseModel):
    mode: str = Field(description="prepaid: work stops at zero; postpaid: at the credit limit")
    available: float = Field(description="What new work may use: granted + limit - owed - held")
    granted: float = Field(description="Credits left in unexpired grants")
    held: float = Field(description="Held for work in flight (generations)")
    owed: float = Field(description="Used beyond the grants, not yet paid")
    credit_limit: float
    open_holds: int
    unit: str
    micros_per_credit: int
    payments: bool = Field(description="Whether top-ups are on (Stripe)")


@router.get("/v1/billing/balance", response_model=BalanceOut, responses=PROBLEM_RESPONSES)
def balance(principal: Reader, platform: PlatformDep) -> BalanceOut:
    """Your credits now. Work whose estimate the balance cannot cover is refused with 402."""
    found = platform.credits.balance(principal.tenant_id)
    return BalanceOut(**balance_json(found), payments=platform.payments.on)


class EntryOut(BaseModel):
    id: int
    kind: str = Field(description="grant, settle (usage paid) or expire")
    credits: float = Field(description="Signed: + granted, - used or expired")
    owed: float = Field(description="The part of a settlement no grant covered")
    key: str = Field(description="The usage key settled (e.g. receipt:{id}) or the grant's id")
    detail: dict[str, Any]
    invoice_id: str | None
    created_at: datetime


class EntryPage(BaseModel):
    items: list[EntryOut]
    next_cursor: str | None


@router.get("/v1/billing/ledger", response_model=EntryPage, responses=PROBLEM_RESPONSES)
def ledger(
    principal: Reader, platform: PlatformDep, limit: Limit = 50, cursor: Cursor = None
) -> EntryPage:
    """Every movement of your credits, newest first."""
    page = platform.credits.ledger(principal.tenant_id, limit, cursor)
    return EntryPage(
        items=[
            EntryOut(
                id=e.id,
                kind=e.kind,
                credits=to_credits(e.amount),
                owed=to_credits(e.owed),
                key=e.key,
                detail=e.detail,
                invoice_id=e.invoice_id,
                created_at=e.created_at,
            )
            for e in page.items
        ],
        next_cursor=page.next_cursor,
    )


class InvoiceOut(BaseModel):
    id: str
    period: str
    period_start: datetime
    period_end: datetime
    status: str = Field(description="draft, open (Stripe has it, unpaid) or paid")
    credits: float
    ledger_cents: int = Field(description="What the ledger bills, in the currency's cents")
    currency: str
    stripe_invoice_id: str | None
    stripe_status: str | None
    stripe_cents: int | None = Field(description="What Stripe holds as paid (reconciliation)")
    difference_cents: int | None = Field(description="stripe_cents - ledger_cents")
    reconciled_at: datetime | None


@router.get("/v1/billing/invoices", response_model=list[InvoiceOut], responses=PROBLEM_RESPONSES)
def list_invoices(principal: Reader, platform: PlatformDep) -> list[InvoiceOut]:
    """Your postpaid invoices, newest period first, each beside what Stripe holds for it."""
    return [
        InvoiceOut(
            id=i.id,
            period=i.period,
            period_start=i.period_start,
            period_end=i.period_end,
            status=i.status,
            credits=to_credits(i.credits),
            ledger_cents=i.amount_cents,
            currency=i.currency,
            stripe_invoice_id=i.stripe_invoice_id,
            stripe_status=i.stripe_status,
            stripe_cents=i.stripe_total_cents,
            difference_cents=i.difference_cents,
            reconciled_at=i.reconciled_at,
        )
        for i in platform.payments.invoices(principal.tenant_id)
    ]


class TopUpIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    amount: int = Field(
        ge=1, le=10**9, description="Credits to buy (the deployment's bounds: see the schema)"
    )


class TopUpOut(BaseModel):
    payment_intent_id: str
    client_secret: str = Field(description="For Stripe.js to confirm the payment")
    status: str
    credits: float
    amount_cents: int
    currency: str


@router.post(
    "/v1/billing/top-ups",
    status_code=201,
    response_model=TopUpOut,
    responses={
        **PROBLEM_RESPONSES,
        **documented(501, "Payments are off on this deployment"),
        **documented(502, "Stripe refused"),
    },
)
def top_up(
    body: TopUpIn, principal: Admin, platform: PlatformDep, idempotency_key: IdempotencyKey = None
) -> TopUpOut:
    """Buy credits: a Stripe PaymentIntent whose client secret the page confirms. The
    credits arrive when Stripe reports the payment succeeded (its webhook), not before."""
    intent, cents = platform.payments.top_up(principal.tenant_id, body.amount, idempotency_key)
    return TopUpOut(
        payment_intent_id=intent.id, client_secret=intent.client_secret, status=intent.status,
        credits=body.amount, amount_cents=cents, currency=platform.settings.billing_currency,
    )  # fmt: skip


# -- Stripe's webhook -------------------------------------------------------------------------


class WebhookOut(BaseModel):
    received: bool
    duplicate: bool
    queued: bool


@router.post(
    "/v1/webhooks/stripe",
    response_model=WebhookOut,
    responses={
        **PROBLEM_RESPONSES,
        **documented(400, "The signature is missing, forged or stale"),
        **documented(501, "Payments are off on this deployment"),
    },
)
async def stripe_webhook(
    request: Request,
    platform: PlatformDep,
    client: WorkflowClientDep,
    stripe_signature: Annotated[str, Header(min_length=1, max_length=4096)],
) -> WebhookOut:
    """Stripe's events, signed (no API key): verified over the raw body, recorded once per
    event id, and handed to a workflow, so the answer is quick and a replay changes nothing.
    Events of other types are acknowledged and ignored."""
    payload = await request.body()  # bounded by the body limit middleware
    got = await run_in_threadpool(platform.payments.receive, payload, stripe_signature)
    if got.start:
        instance_id = f"stripe-{got.event.id}"
        status = await client.get_status(instance_id)
        if status is None or status.runtime_status is None:
            event = {"id": got.event.id, "type": got.event.type, "object": got.event.object}
            await client.start_new(
                STRIPE_EVENT,
                instance_id,
                {"event": event, "retry_first_ms": platform.settings.billing_retry_first_ms},
            )
    return WebhookOut(received=True, duplicate=got.duplicate, queued=got.start)
