"""Payments (``billing/``): Stripe through its SDK on both worlds, off when unset."""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from hartonomous.billing.payment_types import InvoiceState, PaymentEvent, TopUp


class Payments(Protocol):
    """What billing needs from a payment provider. The adapter is ``billing/stripe_payments.py``
    (real Stripe, or localstripe in the tests); errors it cannot get past raise
    ``PaymentsUnavailable`` (retry later) or ``PaymentsRejected`` (the provider said no)."""

    def create_customer(self, tenant_id: str, name: str) -> str: ...

    def top_up(
        self, customer_id: str, cents: int, currency: str, metadata: dict[str, str], key: str
    ) -> TopUp: ...

    def event(self, payload: bytes, signature: str) -> PaymentEvent:
        """The verified event; ``InvalidInput`` for a forged or stale signature."""
        ...

    def pending_item(self, customer_id: str, invoice_ref: str) -> str | None: ...

    def add_item(
        self,
        customer_id: str,
        cents: int,
        currency: str,
        description: str,
        metadata: dict[str, str],
        key: str,
    ) -> str: ...

    def item_invoice(self, item_id: str) -> str | None: ...

    def create_invoice(self, customer_id: str, metadata: dict[str, str], key: str) -> str: ...

    def collect(self, invoice_id: str) -> InvoiceState:
        """Finalize the invoice where it is a draft and charge it; a paid one is returned."""
        ...

    def invoices(self, customer_id: str) -> list[InvoiceState]: ...
