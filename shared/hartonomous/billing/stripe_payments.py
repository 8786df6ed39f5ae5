"""The payments port on Stripe's official SDK (``StripeClient``, no global state).

``LocalstripePayments`` is the same adapter for localstripe, the Stripe-protocol server the
tests run: it has no one-off invoices (an invoice only comes from a subscription) and no
finalize step, so it gives each customer a free monthly subscription at creation and creates
invoices on it; everything else is the same code. docs/billing.md lists what differs.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import stripe

from hartonomous.billing.payment_types import (
    InvoiceState,
    PaymentEvent,
    PaymentsRejected,
    PaymentsUnavailable,
    TopUp,
)
from hartonomous.errors import InvalidInput

T = TypeVar("T")
TIMEOUT_S = 20.0
TOLERANCE_S = 300  # a signature older than this is stale (Stripe's default)
LIST_LIMIT = 100


def _call(fn: Callable[[], T]) -> T:
    """Stripe's errors as the port's: its side or the network, retry; a refusal, not."""
    try:
        return fn()
    except (stripe.APIConnectionError, stripe.RateLimitError) as exc:
        raise PaymentsUnavailable(
            f"Stripe could not be reached: {exc.user_message or exc}"
        ) from exc
    except stripe.APIError as exc:
        raise PaymentsUnavailable(f"Stripe failed: {exc.user_message or exc}") from exc
    except stripe.StripeError as exc:
        raise PaymentsRejected(
            f"Stripe refused: {exc.user_message or exc}", stripe_code=exc.code
        ) from exc


def _state(invoice: Any) -> InvoiceState:
    metadata = invoice.metadata.to_dict() if invoice.metadata else {}
    return InvoiceState(
        id=invoice.id,
        status=invoice.status,
        total_cents=int(invoice.total or 0),
        paid_cents=int(invoice.amount_paid or 0),
        metadata={str(k): str(v) for k, v in metadata.items()},
    )


class StripePayments:
    """Implements ``Payments`` (``ports/payments.py``) against Stripe."""

    def __init__(
        self, api_key: str, webhook_secret: str | None, *, api_base: str | None = None
    ) -> None:
        addresses: Any = {"api": api_base} if api_base else None
        self._client = stripe.StripeClient(
            api_key,
            base_addresses=addresses,
            max_network_retries=2,  # the SDK retries with its idempotency key on the wire
            http_client=stripe.HTTPXClient(timeout=TIMEOUT_S, allow_sync_methods=True),
        )
        self._webhook_secret = webhook_secret

    @property
    def client(self) -> stripe.StripeClient:
        return self._client

    def create_customer(self, tenant_id: str, name: str) -> str:
        customer = _call(
            lambda: self._client.v1.customers.create(
                params={"name": name, "metadata": {"tenant_id": tenant_id}},
                options={"idempotency_key": f"customer:{tenant_id}"},
            )
        )
        return str(customer.id)

    def top_up(
        self, customer_id: str, cents: int, currency: str, metadata: dict[str, str], key: str
    ) -> TopUp:
        intent = _call(
            lambda: self._client.v1.payment_intents.create(
                params={
                    "amount": cents,
                    "currency": currency,
                    "customer": customer_id,
                    "metadata": metadata,
                },
                options={"idempotency_key": key},
            )
        )
        return TopUp(str(intent.id), str(intent.client_secret), str(intent.status))

    def event(self, payload: bytes, signature: str) -> PaymentEvent:
        if not self._webhook_secret:
            raise InvalidInput("no webhook signing secret is configured")
        try:
            event = self._client.construct_event(
                payload, signature, self._webhook_secret, tolerance=TOLERANCE_S
            )
        except stripe.SignatureVerificationError as exc:
            raise InvalidInput(f"the Stripe-Signature does not verify: {exc}") from exc
        except ValueError as exc:  # not JSON
            raise InvalidInput(f"the body is not a Stripe event: {exc}") from exc
        data = event.to_dict()
        return PaymentEvent(str(data["id"]), str(data["type"]), data["data"]["object"])

    def pending_item(self, customer_id: str, invoice_ref: str) -> str | None:
        items = _call(
            lambda: self._client.v1.invoice_items.list(
                params={"customer": customer_id, "limit": LIST_LIMIT}
            )
        )
        for item in items.data:
            metadata = item.metadata.to_dict() if item.metadata else {}
            if metadata.get("hartonomous_invoice_id") == invoice_ref and not item.invoice:
                return str(item.id)
        return None

    def add_item(
        self,
        customer_id: str,
        cents: int,
        currency: str,
        description: str,
        metadata: dict[str, str],
        key: str,
    ) -> str:
        item = _call(
            lambda: self._client.v1.invoice_items.create(
                params={
                    "customer": customer_id,
                    "amount": cents,
                    "currency": currency,
                    "description": description,
                    "metadata": metadata,
                },
                options={"idempotency_key": key},
            )
        )
        return str(item.id)

    def item_invoice(self, item_id: str) -> str | None:
        item = _call(lambda: self._client.v1.invoice_items.retrieve(item_id))
        invoice = item.invoice
        if invoice is None:
            return None
        return str(invoice if isinstance(invoice, str) else invoice.id)

    def create_invoice(self, customer_id: str, metadata: dict[str, str], key: str) -> str:
        invoice = _call(
            lambda: self._client.v1.invoices.create(
                params={
                    "customer": customer_id,
                    "metadata": metadata,
                    "collection_method": "charge_automatically",
                    "auto_advance": False,
                    "pending_invoice_items_behavior": "include",
                },
                options={"idempotency_key": key},
            )
        )
        return str(invoice.id)

    def _finalize(self, invoice_id: str) -> None:
        _call(
            lambda: self._client.v1.invoices.finalize_invoice(
                invoice_id, params={"auto_advance": False}
            )
        )

    def collect(self, invoice_id: str) -> InvoiceState:
        state = _state(_call(lambda: self._client.v1.invoices.retrieve(invoice_id)))
        if state.status == "paid":
            return state
        if state.status == "draft":
            self._finalize(invoice_id)
        return _state(_call(lambda: self._client.v1.invoices.pay(invoice_id)))

    def invoices(self, customer_id: str) -> list[InvoiceState]:
        found = _call(
            lambda: self._client.v1.invoices.list(
                params={"customer": customer_id, "limit": LIST_LIMIT}
            )
        )
        return [_state(i) for i in found.data]


class LocalstripePayments(StripePayments):
    """localstripe's dialect: invoices come from a free subscription, and paying a draft
    finalizes it."""

    def create_customer(self, tenant_id: str, name: str) -> str:
        customer_id = super().create_customer(tenant_id, name)
        product = _call(lambda: self._client.v1.products.create(params={"name": "usage"}))
        plan = _call(
            lambda: self._client.v1.plans.create(
                params={
                    "product": product.id,
                    "amount": 0,
                    "currency": "usd",
                    "interval": "month",
                }
            )
        )
        _call(
            lambda: self._client.v1.subscriptions.create(
                params={"customer": customer_id, "items": [{"plan": plan.id}]}
            )
        )
        return customer_id

    def create_invoice(self, customer_id: str, metadata: dict[str, str], key: str) -> str:
        subs = _call(lambda: self._client.v1.subscriptions.list(params={"customer": customer_id}))
        if not subs.data:
            raise PaymentsRejected(f"customer {customer_id} has no subscription to invoice on")
        invoice = _call(
            lambda: self._client.v1.invoices.create(
                params={"customer": customer_id, "subscription": subs.data[0].id}
            )
        )
        # localstripe drops metadata given at creation; a draft takes it afterwards.
        _call(lambda: self._client.v1.invoices.update(invoice.id, params={"metadata": metadata}))
        return str(invoice.id)

    def _finalize(self, invoice_id: str) -> None:
        return None  # no finalize route: pay takes the draft
