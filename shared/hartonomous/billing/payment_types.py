"""The values the payments port passes, and its two errors."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hartonomous.errors import HartonomousError


@dataclass(frozen=True)
class TopUp:
    id: str  # the payment intent's
    client_secret: str
    status: str


@dataclass(frozen=True)
class PaymentEvent:
    id: str
    type: str
    object: dict[str, Any]


@dataclass(frozen=True)
class InvoiceState:
    id: str
    status: str  # draft | open | paid | uncollectible | void
    total_cents: int
    paid_cents: int
    metadata: dict[str, str] = field(default_factory=dict)


class PaymentsUnavailable(HartonomousError):
    """The provider could not be reached, or failed on its side: try again later."""

    status, title, slug = 503, "Payments unavailable", "payments-unavailable"


class PaymentsRejected(HartonomousError):
    """The provider refused the request (a declined card, an invalid request)."""

    status, title, slug = 502, "Payment rejected", "payment-rejected"
