"""Money in and out through the payments port: top-ups, Stripe's webhook events, the postpaid
billing of one tenant for one period, and its reconciliation with Stripe.

Billing one tenant is a resumable sequence; each step's Stripe id is committed before the
next step, and every step first looks for what an earlier, crashed attempt made:

1. the invoice row: the period's unbilled settlements are totalled and tagged with it, in one
   transaction (later attempts find the row and the tags);
2. the invoice item: an earlier one is found among the customer's pending items by the row's
   id in its metadata (a crash between Stripe's answer and our commit), else created;
3. the invoice: the item knows the invoice that took it, else one is created;
4. collecting it: a paid invoice is not paid again.

Stripe's idempotency keys (``{step}:{tenant}:{period}``, kept 24 hours) guard the same
windows on real Stripe; localstripe ignores them, which is why the lookups exist.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from hartonomous.billing.billing_store import Invoice
from hartonomous.billing.money import MICROS, to_cents, to_credits
from hartonomous.billing.payment_types import PaymentEvent, PaymentsRejected, TopUp
from hartonomous.billing.service import checked_amount
from hartonomous.errors import HartonomousError, NotFound, UnprocessableContent
from hartonomous.ports import Payments, UnitOfWorkFactory
from hartonomous.services.clock import new_id, utcnow

log = logging.getLogger(__name__)

HANDLED = frozenset(
    {"payment_intent.succeeded", "invoice.payment_succeeded", "invoice.payment_failed"}
)


class PaymentsOff(HartonomousError):
    status, title, slug = 501, "Payments are off", "payments-off"


@dataclass(frozen=True)
class Period:
    label: str  # e.g. 2026-11
    start: datetime
    end: datetime

    def to_json(self) -> dict[str, str]:
        return {"period": self.label, "start": self.start.isoformat(),
                "end": self.end.isoformat()}  # fmt: skip

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Period:
        return cls(
            str(data["period"]),
            datetime.fromisoformat(data["start"]),
            datetime.fromisoformat(data["end"]),
        )

    @classmethod
    def month_before(cls, moment: datetime) -> Period:
        """The calendar month (UTC) before the one ``moment`` is in."""
        end = moment.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
        start = (end.replace(year=end.year - 1, month=12) if end.month == 1
                 else end.replace(month=end.month - 1))  # fmt: skip
        return cls(f"{start:%Y-%m}", start, end)


@dataclass(frozen=True)
class Received:
    """A webhook delivery: ``start`` when its work should go to a workflow now."""

    event: PaymentEvent
    start: bool
    duplicate: bool


@dataclass
class PaymentService:
    uow_factory: UnitOfWorkFactory
    payments: Payments | None
    cents_per_credit: int
    currency: str
    top_up_min: int  # credits
    top_up_max: int

    @property
    def on(self) -> bool:
        return self.payments is not None

    def _payments(self) -> Payments:
        if self.payments is None:
            raise PaymentsOff(
                "payments are off on this deployment (no Stripe settings): credits come from "
                "the operator (hartonomous credits grant)"
            )
        return self.payments

    # -- customers and top-ups -----------------------------------------------------------------

    def customer(self, tenant_id: str) -> str:
        """The tenant's Stripe customer, created on first need. Two racing callers may both
        create one; the first stored wins and the other is never used."""
        payments = self._payments()
        with self.uow_factory(write=False, tenant_id=tenant_id) as uow:
            account = uow.credits.account(tenant_id)
            tenant = uow.tenants.get(tenant_id)
        if account is not None and account.stripe_customer_id:
            return account.stripe_customer_id
        name = tenant.name if tenant is not None else tenant_id
        created = payments.create_customer(tenant_id, name)
        with self.uow_factory(write=True, tenant_id=tenant_id) as uow:
            now = utcnow()
            uow.credits.ensure_account(tenant_id, now)
            stored = uow.credits.account(tenant_id)
            assert stored is not None
            if stored.stripe_customer_id:
                return stored.stripe_customer_id
            uow.credits.set_customer(tenant_id, created, now)
            uow.commit()
        return created

    def top_up(self, tenant_id: str, credits: float, key: str | None) -> tuple[TopUp, int]:
        """A PaymentIntent for ``credits``: (it, its cents). The credits are
        granted when Stripe says it succeeded (``payment_intent.succeeded``), never here."""
        checked_amount(credits, what="a top-up", most=self.top_up_max)
        if credits != int(credits):
            raise UnprocessableContent("a top-up is a whole number of credits")
        if credits < self.top_up_min:
            raise UnprocessableContent(
                f"a top-up is at least {self.top_up_min} credits", limit=self.top_up_min
            )
        cents = int(credits) * self.cents_per_credit
        payments = self._payments()
        customer = self.customer(tenant_id)
        metadata = {"tenant_id": tenant_id, "credits": str(int(credits)), "kind": "top-up"}
        intent = payments.top_up(
            customer, cents, self.currency, metadata, f"top-up:{tenant_id}:{key or new_id()}"
        )
        return intent, cents

    # -- webhooks --------------------------------------------------------------------------------

    def receive(self, payload: bytes, signature: str) -> Received:
        """Verify and record a delivery, once per event id; its work is the workflow's."""
        event = self._payments().event(payload, signature)
        tenant_id = _tenant_of(event)
        handled = event.type in HANDLED and tenant_id is not None
        with self.uow_factory(write=True) as uow:
            new = uow.billing.record_event(
                event.id, event.type, tenant_id, "queued" if handled else "ignored", utcnow()
            )
            seen = uow.billing.event(event.id)
            uow.commit()
        # A delivery seen before whose workflow never finished starts it again (the start is
        # idempotent by instance id, and so is the work).
        pending = seen is not None and seen.outcome == "queued"
        return Received(event, handled and (new or pending), not new)

    def apply(self, event: PaymentEvent) -> str:
        """The workflow's activity: what the event means for the ledger; idempotent."""
        tenant_id = _tenant_of(event)
        obj, now = event.object, utcnow()
        outcome = "ignored"
        if tenant_id is not None and event.type == "payment_intent.succeeded":
            metadata = obj.get("metadata") or {}
            if metadata.get("kind") != "top-up" or obj.get("currency") != self.currency:
                # Not a top-up of ours (an invoice's payment, another app's): no credits.
                log.warning("payment %s is not a top-up in %s: ignored", obj.get("id"),
                            self.currency)  # fmt: skip
                with self.uow_factory(write=True) as uow:
                    uow.billing.finish_event(event.id, "not a top-up", now)
                    uow.commit()
                return "not a top-up"
            cents = int(obj.get("amount_received") or obj.get("amount") or 0)
            # What was received buys the credits, at the price of the day.
            credits = cents * MICROS // self.cents_per_credit
            with self.uow_factory(write=True, tenant_id=tenant_id) as uow:
                account = uow.credits.account(tenant_id)
                if account is None or account.stripe_customer_id != obj.get("customer"):
                    # Another deployment's tenant, or a payment whose customer is not the
                    # tenant its metadata names: no credits.
                    log.warning("payment %s: customer %s is not tenant %s's", obj.get("id"),
                                obj.get("customer"), tenant_id)  # fmt: skip
                    uow.billing.finish_event(event.id, "not this tenant's customer", now)
                    uow.commit()
                    return "not this tenant's customer"
                granted = uow.credits.grant(
                    tenant_id, credits, kind="paid", source="payment",
                    source_ref=f"payment:{obj['id']}", at=now,
                    detail={"payment_intent": obj["id"], "cents": cents,
                            "currency": obj.get("currency")},
                )  # fmt: skip
                uow.billing.finish_event(event.id, "done", now)
                uow.commit()
            outcome = "granted" if granted else "granted before"
        elif tenant_id is not None and event.type.startswith("invoice.payment_"):
            ref = str((obj.get("metadata") or {}).get("hartonomous_invoice_id") or "")
            status = str(obj.get("status") or "")
            with self.uow_factory(write=True, tenant_id=tenant_id) as uow:
                invoice = uow.billing.by_id(tenant_id, ref)
                if invoice is None or invoice.stripe_invoice_id not in (None, obj.get("id")):
                    outcome = "not our invoice"
                elif status == "paid":  # paid outside a run (the hosted invoice page)
                    self._paid(uow, invoice, status, int(obj.get("total") or 0), now)
                    outcome = "paid"
                else:
                    uow.billing.update_invoice(invoice.id, now, stripe_status=status)
                    outcome = "recorded"
                uow.billing.finish_event(event.id, outcome, now)
                uow.commit()
        return outcome

    # -- postpaid billing ------------------------------------------------------------------------

    def due(self, period: Period) -> list[str]:
        """Tenants the run bills for the period: every postpaid one (a prepaid tenant that
        was postpaid keeps the invoices it had; its new usage was paid for up front)."""
        with self.uow_factory(write=False) as uow:
            return uow.credits.postpaid_accounts()

    def bill(self, tenant_id: str, period: Period) -> dict[str, Any]:
        """Bill one tenant for one period (the module's steps); safe to run again at any
        point, by a retry or a replay. Invoices an earlier run left unpaid are finished
        first, so their pending items go on their own invoices."""
        with self.uow_factory(write=False, tenant_id=tenant_id) as uow:
            earlier = [i for i in uow.billing.unfinished(tenant_id) if i.period != period.label]
        for stuck in earlier:
            self._finish(stuck)
        invoice = self._invoice(tenant_id, period)
        if invoice is None:
            return {"tenant_id": tenant_id, "status": "nothing to bill"}
        return self._finish(invoice)

    def _finish(self, invoice: Invoice) -> dict[str, Any]:
        """Steps 2-4 for one invoice row."""
        if invoice.status in ("paid", "empty"):
            return _summary(invoice)
        tenant_id, period = invoice.tenant_id, invoice.period
        payments = self._payments()
        customer = self.customer(tenant_id)
        metadata = {"hartonomous_invoice_id": invoice.id, "tenant_id": tenant_id,
                    "period": period}  # fmt: skip
        item = invoice.stripe_invoice_item_id
        if item is None:
            item = payments.pending_item(customer, invoice.id) or payments.add_item(
                customer,
                invoice.amount_cents,
                invoice.currency,
                f"Hartonomous usage {period}: {to_credits(invoice.credits):g} credits",
                metadata,
                f"invoice-item:{tenant_id}:{period}",
            )
            self._save(tenant_id, invoice.id, stripe_invoice_item_id=item)
        stripe_invoice = invoice.stripe_invoice_id
        if stripe_invoice is None:
            stripe_invoice = payments.item_invoice(item) or payments.create_invoice(
                customer, metadata, f"invoice:{tenant_id}:{period}"
            )
            self._save(tenant_id, invoice.id, stripe_invoice_id=stripe_invoice, status="open")
        state = payments.collect(stripe_invoice)
        with self.uow_factory(write=True, tenant_id=tenant_id) as uow:
            now = utcnow()
            current = uow.billing.by_id(tenant_id, invoice.id)
            assert current is not None
            if state.status == "paid":
                self._paid(uow, current, state.status, state.total_cents, now)
            else:
                uow.billing.update_invoice(
                    invoice.id, now, stripe_status=state.status,
                    stripe_total_cents=state.total_cents,
                )  # fmt: skip
            uow.commit()
            done = uow.billing.by_id(tenant_id, invoice.id)
        if state.status != "paid":
            raise PaymentsRejected(f"Stripe left invoice {stripe_invoice} {state.status}")
        assert done is not None
        return _summary(done)

    @staticmethod
    def _paid(uow: Any, invoice: Invoice, status: str, total_cents: int, now: datetime) -> None:
        """Mark the invoice paid and the account owing its credits no more, once, whoever
        learns it first (the run, Stripe's webhook, a concurrent run)."""
        if uow.billing.mark_paid(invoice.id, now, stripe_status=status,
                                 stripe_total_cents=total_cents):  # fmt: skip
            uow.credits.pay_owed(invoice.tenant_id, invoice.credits, now)

    def _invoice(self, tenant_id: str, period: Period) -> Invoice | None:
        """The period's invoice row, made on the first attempt with the settlements it bills
        tagged in the same transaction; None when there is nothing to bill."""
        with self.uow_factory(write=True, tenant_id=tenant_id) as uow:
            now = utcnow()
            found = uow.billing.invoice(tenant_id, period.label)
            if found is not None:
                return found
            if period.end > now:  # what it bills would not be all of the period's usage
                raise UnprocessableContent(
                    f"period {period.label} ends at {period.end.isoformat()}: it is billed "
                    "once it has ended"
                )
            total, _ = uow.credits.unbilled(tenant_id, period.end)
            if not to_cents(total, self.cents_per_credit):  # under half a cent: carried
                return None
            invoice = uow.billing.open_invoice(
                tenant_id, period.label, period.start, period.end, self.currency, now
            )
            # Tag, then total what was tagged: a settlement that commits between a total and
            # the tags (Azure SQL) is then billed, not tagged and lost.
            uow.credits.mark_billed(tenant_id, invoice.id, period.end)
            total = uow.credits.billed_total(tenant_id, invoice.id)
            cents = to_cents(total, self.cents_per_credit)
            uow.billing.update_invoice(invoice.id, now, credits=total, amount_cents=cents)
            uow.commit()
            return uow.billing.invoice(tenant_id, period.label)

    def _save(self, tenant_id: str, invoice_id: str, **values: Any) -> None:
        with self.uow_factory(write=True, tenant_id=tenant_id) as uow:
            uow.billing.update_invoice(invoice_id, utcnow(), **values)
            uow.commit()

    def reconcile(self, tenant_id: str, period: Period) -> dict[str, Any]:
        """Compare the ledger's billed total with what Stripe holds for the invoice, to the
        cent, and record both and the difference on the invoice row."""
        with self.uow_factory(write=False, tenant_id=tenant_id) as uow:
            invoice = uow.billing.invoice(tenant_id, period.label)
            account = uow.credits.account(tenant_id)
            ledger = uow.credits.billed_total(tenant_id, invoice.id) if invoice else 0
        if invoice is None or account is None or not account.stripe_customer_id:
            return {"tenant_id": tenant_id, "period": period.label, "reconciled": False}
        ledger_cents = to_cents(ledger, self.cents_per_credit)
        states = [
            s
            for s in self._payments().invoices(account.stripe_customer_id)
            if s.metadata.get("hartonomous_invoice_id") == invoice.id
        ]
        stripe_cents = sum(s.paid_cents for s in states)
        difference = stripe_cents - ledger_cents
        if difference or len(states) != 1:
            log.warning(
                "reconciliation: tenant %s period %s: ledger %d cents, Stripe %d cents in %d "
                "invoices", tenant_id, period.label, ledger_cents, stripe_cents, len(states),
            )  # fmt: skip
        with self.uow_factory(write=True, tenant_id=tenant_id) as uow:
            uow.billing.update_invoice(
                invoice.id, utcnow(), stripe_total_cents=stripe_cents,
                difference_cents=difference, reconciled_at=utcnow(),
            )  # fmt: skip
            uow.commit()
        return {"tenant_id": tenant_id, "period": period.label, "reconciled": True,
                "ledger_cents": ledger_cents, "stripe_cents": stripe_cents,
                "difference_cents": difference, "stripe_invoices": len(states)}  # fmt: skip

    def invoices(self, tenant_id: str) -> list[Invoice]:
        with self.uow_factory(write=False, tenant_id=tenant_id) as uow:
            return uow.billing.invoices(tenant_id)

    def invoice(self, tenant_id: str, period: str) -> Invoice:
        with self.uow_factory(write=False, tenant_id=tenant_id) as uow:
            found = uow.billing.invoice(tenant_id, period)
        if found is None:
            raise NotFound(f"no invoice for period {period!r}")
        return found


def _tenant_of(event: PaymentEvent) -> str | None:
    metadata = event.object.get("metadata") or {}
    tenant = metadata.get("tenant_id") if isinstance(metadata, dict) else None
    return str(tenant) if tenant else None


def _summary(invoice: Invoice) -> dict[str, Any]:
    return {"tenant_id": invoice.tenant_id, "period": invoice.period, "status": invoice.status,
            "amount_cents": invoice.amount_cents,
            "stripe_invoice_id": invoice.stripe_invoice_id}  # fmt: skip
