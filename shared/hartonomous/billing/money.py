"""Credits and money: the units, and the terms every tenant starts with.

Credits are kept as integer micro-credits so that sums are exact; money is integer cents of
one currency, as Stripe takes it.
"""

from __future__ import annotations

from dataclasses import dataclass

MICROS = 1_000_000  # micro-credits in a credit


@dataclass(frozen=True)
class CreditTerms:
    """What the default plan gives: the promotional starting grant, in micro-credits, and
    how many days it lasts (0: it does not expire)."""

    starting_micros: int = 1_000 * MICROS
    starting_days: int = 0


def to_micros(credits: float) -> int:
    return round(credits * MICROS)


def to_credits(micros: int) -> float:
    return micros / MICROS


def to_cents(micros: int, cents_per_credit: int) -> int:
    """Money for an amount of credits, rounded half up to the cent (what an invoice bills
    and what reconciliation expects Stripe to hold)."""
    return (micros * cents_per_credit + MICROS // 2) // MICROS
