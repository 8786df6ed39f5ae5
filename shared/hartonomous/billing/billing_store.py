"""Invoices and Stripe's events (``uow.billing``): where each billing run got to with Stripe,
and which webhook deliveries were seen."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from hartonomous.services.clock import new_id
from hartonomous.store.schema import invoices, stripe_events

if TYPE_CHECKING:
    from hartonomous.ports import InsertOrIgnore


@dataclass(frozen=True)
class Invoice:
    id: str
    tenant_id: str
    period: str
    period_start: datetime
    period_end: datetime
    status: str  # draft | open | paid | empty
    credits: int  # micro-credits billed
    amount_cents: int
    currency: str
    stripe_invoice_item_id: str | None
    stripe_invoice_id: str | None
    stripe_total_cents: int | None
    stripe_status: str | None
    difference_cents: int | None
    reconciled_at: datetime | None
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True)
class StripeEvent:
    id: str
    type: str
    tenant_id: str | None
    outcome: str
    received_at: datetime
    done_at: datetime | None


class BillingRepository:
    def __init__(self, conn: sa.Connection, insert_or_ignore: InsertOrIgnore) -> None:
        self._conn = conn
        self._insert_new = insert_or_ignore

    # -- invoices ------------------------------------------------------------------------------

    def open_invoice(
        self,
        tenant_id: str,
        period: str,
        start: datetime,
        end: datetime,
        currency: str,
        at: datetime,
    ) -> Invoice:
        """The tenant's invoice for the period, created as a draft on first call."""
        row = {"id": new_id(), "tenant_id": tenant_id, "period": period, "period_start": start,
               "period_end": end, "status": "draft", "credits": 0, "amount_cents": 0,
               "currency": currency, "created_at": at, "updated_at": at}  # fmt: skip
        self._insert_new(self._conn, invoices, [row], ("tenant_id", "period"))
        found = self.invoice(tenant_id, period)
        assert found is not None
        return found

    def invoice(self, tenant_id: str, period: str) -> Invoice | None:
        i = invoices
        row = self._conn.execute(
            i.select().where(i.c.tenant_id == tenant_id, i.c.period == period)
        ).first()
        return Invoice(**row._mapping) if row else None

    def update_invoice(self, invoice_id: str, at: datetime, **values: Any) -> None:
        i = invoices
        self._conn.execute(i.update().where(i.c.id == invoice_id).values(updated_at=at, **values))

    def mark_paid(self, invoice_id: str, at: datetime, **values: Any) -> bool:
        """Paid, once: False when it already was (a concurrent run, a webhook, a replay)."""
        i = invoices
        done = self._conn.execute(
            i.update()
            .where(i.c.id == invoice_id, i.c.status != "paid")
            .values(status="paid", updated_at=at, **values)
        )
        return bool(done.rowcount)

    def by_id(self, tenant_id: str, invoice_id: str) -> Invoice | None:
        i = invoices
        row = self._conn.execute(
            i.select().where(i.c.tenant_id == tenant_id, i.c.id == invoice_id)
        ).first()
        return Invoice(**row._mapping) if row else None

    def unfinished(self, tenant_id: str) -> list[Invoice]:
        """Invoices a run left with Stripe unpaid (or never reached), oldest first."""
        i = invoices
        rows = self._conn.execute(
            i.select()
            .where(i.c.tenant_id == tenant_id, i.c.status.in_(("draft", "open")))
            .order_by(i.c.period_start)
        )
        return [Invoice(**r._mapping) for r in rows]

    def invoices(self, tenant_id: str, limit: int = 100) -> list[Invoice]:
        i = invoices
        rows = self._conn.execute(
            i.select()
            .where(i.c.tenant_id == tenant_id)
            .order_by(i.c.period_start.desc())
            .limit(limit)
        )
        return [Invoice(**r._mapping) for r in rows]

    # -- Stripe's events -----------------------------------------------------------------------

    def record_event(
        self, event_id: str, type_: str, tenant_id: str | None, outcome: str, at: datetime
    ) -> bool:
        """Once per event id: False for a delivery seen before."""
        row = {"id": event_id, "type": type_, "tenant_id": tenant_id, "outcome": outcome,
               "received_at": at, "done_at": None}  # fmt: skip
        return bool(self._insert_new(self._conn, stripe_events, [row], ("id",)))

    def event(self, event_id: str) -> StripeEvent | None:
        e = stripe_events
        row = self._conn.execute(e.select().where(e.c.id == event_id)).first()
        return StripeEvent(**row._mapping) if row else None

    def finish_event(self, event_id: str, outcome: str, at: datetime) -> None:
        e = stripe_events
        self._conn.execute(e.update().where(e.c.id == event_id).values(outcome=outcome, done_at=at))
