"""Credits for the routes, the CLI and the sweeps: balance, holds, operator grants, the ledger.

Two ways work is refused when credits cannot cover it (``402``, naming balance and estimate):
- long work (a generation) *holds* its estimate before it starts; its receipt's transaction
  settles what it used and closes the hold, and a failure releases it;
- instant work (a search, an ingestion's start, an agent or loop run's start) only *checks*
  that the balance covers its estimate: holding credits for a few milliseconds would cost a
  write transaction per search for nothing, and its usage settles as it is recorded.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from hartonomous.billing.credits import POSTPAID, PREPAID, Balance, Entry, Grant
from hartonomous.billing.money import MICROS, to_credits, to_micros
from hartonomous.errors import InvalidInput, PaymentRequired, UnprocessableContent
from hartonomous.metering.pricing import price
from hartonomous.ports import UnitOfWorkFactory
from hartonomous.services.clock import new_id, utcnow
from hartonomous.services.pages import Page, page_of, position_after

MAX_GRANT_CREDITS = 10**9  # an operator's single grant; more is a typo
MAX_CREDIT_LIMIT = 10**9


def _refused(balance: Balance, estimate: int, what: str) -> PaymentRequired:
    return PaymentRequired(
        f"{what} needs about {to_credits(estimate):g} credits; the balance is "
        f"{to_credits(balance.available):g}. Top up (POST /v1/billing/top-ups) or ask the "
        "operator for credits",
        balance=to_credits(balance.available),
        estimate=to_credits(estimate),
    )


def generation_estimate(prompt_tokens: int, max_tokens: int, k: int) -> int:
    """A generation's hold, in micro-credits: its prompt at most, every token it may write,
    and its search."""
    quantities = {
        "generation.prompt_tokens": prompt_tokens,
        "generation.completion_tokens": max_tokens,
        "search.queries": 1 if k else 0,
    }
    return to_micros(price(quantities).credits)


def search_estimate() -> int:
    return to_micros(price({"search.queries": 1}).credits)


def checked_amount(credits: float, *, what: str, most: float) -> int:
    """Credits given by a person, in micro-credits: positive, finite, bounded (``422``)."""
    if not math.isfinite(credits) or credits <= 0:
        raise UnprocessableContent(f"{what} must be a positive number of credits")
    if credits > most:
        raise UnprocessableContent(f"{what} is at most {most:g} credits", limit=most)
    return to_micros(credits)


# A balance that covered instant work stays trusted this long per process: the check is then
# microseconds instead of a read (1.3 ms here on SQLite), and at most this much of instant
# work (searches at 0.01 credits) can overdraw. A refusal always reads afresh.
FRESH_S = 1.0


@dataclass
class CreditService:
    uow_factory: UnitOfWorkFactory
    hold_ttl: timedelta = timedelta(hours=1)
    fresh_s: float = FRESH_S
    _covered: dict[str, tuple[float, int]] = field(default_factory=dict, init=False, repr=False)

    def balance(self, tenant_id: str) -> Balance:
        with self.uow_factory(write=False, tenant_id=tenant_id) as uow:
            return uow.credits.balance(tenant_id, utcnow())

    def grants(self, tenant_id: str) -> list[Grant]:
        with self.uow_factory(write=False, tenant_id=tenant_id) as uow:
            return uow.credits.grants(tenant_id)

    def require(self, tenant_id: str, estimate: int, what: str) -> None:
        """Refuse (402) instant work the balance does not cover; nothing is held."""
        now = time.monotonic()
        cached = self._covered.get(tenant_id)
        if cached is not None and cached[0] > now and cached[1] >= estimate:
            return
        balance = self.balance(tenant_id)
        if balance.available < estimate:
            self._covered.pop(tenant_id, None)
            raise _refused(balance, estimate, what)
        if len(self._covered) > 100_000:  # bounded: one entry per active tenant
            self._covered.clear()
        self._covered[tenant_id] = (now + self.fresh_s, balance.available)

    def hold(self, tenant_id: str, key: str, estimate: int, what: str) -> None:
        """Hold ``estimate`` for the work whose usage will be keyed ``key``, or refuse (402)."""
        with self.uow_factory(write=True, tenant_id=tenant_id) as uow:
            held, before = uow.credits.hold(tenant_id, key, estimate, utcnow(), self.hold_ttl)
            if not held:
                raise _refused(before, estimate, what)
            uow.commit()

    def release(self, tenant_id: str, key: str) -> bool:
        """Give back a hold its work never settled (it failed, or never ran); a no-op after
        settlement."""
        with self.uow_factory(write=True, tenant_id=tenant_id) as uow:
            released = uow.credits.close_hold(tenant_id, key, "released", utcnow())
            uow.commit()
        return released

    def grant(
        self,
        tenant_id: str,
        credits: float,
        *,
        promotional: bool,
        expires_at: datetime | None = None,
        reason: str | None = None,
    ) -> Grant:
        """The operator's grant (``hartonomous credits grant``); no API route makes one."""
        amount = checked_amount(credits, what="a grant", most=MAX_GRANT_CREDITS)
        now = utcnow()
        if expires_at is not None and expires_at <= now:
            raise UnprocessableContent("the grant's expiry is in the past")
        with self.uow_factory(write=True, tenant_id=tenant_id) as uow:
            grant = uow.credits.grant(
                tenant_id, amount, kind="promotional" if promotional else "paid",
                source="operator", source_ref=f"operator:{new_id()}", at=now,
                expires_at=expires_at, detail={"reason": reason} if reason else None,
            )  # fmt: skip
            uow.commit()
        assert grant is not None  # a fresh source_ref is never taken
        return grant

    def set_mode(self, tenant_id: str, *, postpaid: bool, credit_limit: float | None) -> Balance:
        """Prepaid (the default: work stops at zero) or postpaid up to ``credit_limit``."""
        if postpaid and credit_limit is None:
            raise InvalidInput("a postpaid tenant needs a credit limit (--credit-limit)")
        limit = 0
        if postpaid:
            assert credit_limit is not None
            limit = checked_amount(credit_limit, what="the credit limit", most=MAX_CREDIT_LIMIT)
        with self.uow_factory(write=True, tenant_id=tenant_id) as uow:
            uow.credits.set_mode(tenant_id, POSTPAID if postpaid else PREPAID, limit, utcnow())
            uow.commit()
        return self.balance(tenant_id)

    def ledger(self, tenant_id: str, limit: int, cursor: str | None) -> Page[Entry]:
        after = None
        if cursor:
            found = position_after(cursor)
            assert found is not None
            try:
                after = (found[0], int(found[1]))
            except ValueError:
                raise InvalidInput("cursor is not one this API returned") from None
        with self.uow_factory(write=False, tenant_id=tenant_id) as uow:
            rows = uow.credits.entries(tenant_id, limit + 1, after)
        return page_of(rows, limit, lambda e: (e.created_at, str(e.id)))

    def sweep(self, *, now: datetime | None = None) -> dict[str, int]:
        """Release holds past their expiry (the work's server died before settling), and
        zero the expired grants of the tenants it passes, tenant by tenant; every step is
        idempotent."""
        now = now or utcnow()
        released, after = 0, ""
        while True:
            with self.uow_factory(write=False) as uow:
                holding = uow.credits.accounts_holding(after)
            for tenant_id in holding:
                with self.uow_factory(write=True, tenant_id=tenant_id) as uow:
                    for key in uow.credits.expired_holds(tenant_id, now):
                        released += uow.credits.close_hold(tenant_id, key, "released", now)
                    uow.credits.expire(tenant_id, now)
                    uow.commit()
            if not holding:
                return {"released": released}
            after = holding[-1]

    def expire_grants(self, tenant_id: str, *, now: datetime | None = None) -> int:
        with self.uow_factory(write=True, tenant_id=tenant_id) as uow:
            expired = uow.credits.expire(tenant_id, now or utcnow())
            uow.commit()
        return expired


def balance_json(balance: Balance) -> dict[str, Any]:
    return {
        "mode": balance.mode,
        "available": to_credits(balance.available),
        "granted": to_credits(balance.granted),
        "held": to_credits(balance.held),
        "owed": to_credits(balance.owed),
        "credit_limit": to_credits(balance.credit_limit),
        "open_holds": balance.open_holds,
        "unit": "credits",
        "micros_per_credit": MICROS,
    }
