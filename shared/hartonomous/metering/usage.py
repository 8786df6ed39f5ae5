"""A tenant's usage over a period, by kind, priced in credits (``/v1/usage``)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from hartonomous.metering.ledger import UsageTotal
from hartonomous.metering.pricing import price
from hartonomous.ports import UnitOfWorkFactory


@dataclass(frozen=True)
class PricedUsage:
    total: UsageTotal
    credits: float


@dataclass(frozen=True)
class UsageReport:
    lines: list[PricedUsage]
    credits: float


@dataclass
class UsageService:
    uow_factory: UnitOfWorkFactory

    def report(self, tenant_id: str, start: datetime | None, end: datetime | None) -> UsageReport:
        """What the tenant used in ``[start, end)`` (open ends: unbounded)."""
        with self.uow_factory(write=False, tenant_id=tenant_id) as uow:
            totals = uow.usage.totals(tenant_id, start, end)
        lines = [PricedUsage(t, price({t.kind: t.quantity}).credits) for t in totals]
        return UsageReport(lines, round(sum(line.credits for line in lines), 6))
