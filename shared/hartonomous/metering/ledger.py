"""The usage ledger: rows are only ever added, and a key counts once.

Each row is keyed by what caused it (a receipt id, a request id, an activity's stable key),
so a replayed activity or a retried request writes nothing new: the unique key
(tenant_id, key, kind) turns the second insert into a no-op, through the ``InsertOrIgnore``
port (one statement on SQLite, a look and a savepointed insert on Azure SQL).

Recording is also where credits are debited: the rows that are new are priced and settled
on the tenant's credit ledger (``billing/credits.py``) in the same transaction, closing the
hold keyed as they are. So every metered path (a receipt, a search, an embedding batch, an
agent's or the loop's tokens) pays exactly once, and a debit exists exactly when its usage
does.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

import sqlalchemy as sa

from hartonomous.billing.money import to_micros
from hartonomous.metering.pricing import price
from hartonomous.store.schema import usage_ledger

if TYPE_CHECKING:
    from hartonomous.billing.credits import CreditRepository
    from hartonomous.ports import InsertOrIgnore


@dataclass(frozen=True)
class Usage:
    kind: str  # what was used: generation.completion_tokens, search.queries, ...
    quantity: int
    unit: str  # tokens | queries | texts | ...


@dataclass(frozen=True)
class UsageTotal:
    kind: str
    unit: str
    quantity: int
    events: int


class UsageRepository:
    KEY = ("tenant_id", "key", "kind")

    def __init__(
        self, conn: sa.Connection, insert_or_ignore: InsertOrIgnore, credits: CreditRepository
    ) -> None:
        self._conn = conn
        self._insert_new = insert_or_ignore
        self._credits = credits

    def record(self, tenant_id: str, key: str, items: Sequence[Usage], at: datetime) -> int:
        """Append what is not there yet and settle its price; returns the rows added (0 on
        a replay, which debits nothing)."""
        new = [
            item
            for item, row in zip(items, _rows(tenant_id, key, items, at), strict=True)
            if self._insert_new(self._conn, usage_ledger, [row], self.KEY)
        ]
        if new or items:  # an open hold keyed so closes even when nothing new was used
            cost = price({u.kind: u.quantity for u in new})
            self._credits.settle(tenant_id, key, to_micros(cost.credits), cost.lines, at)
        return len(new)

    def totals(
        self, tenant_id: str, start: datetime | None, end: datetime | None
    ) -> list[UsageTotal]:
        query = (
            sa.select(
                usage_ledger.c.kind,
                usage_ledger.c.unit,
                sa.func.sum(usage_ledger.c.quantity),
                sa.func.count(),
            )
            .where(usage_ledger.c.tenant_id == tenant_id)
            .group_by(usage_ledger.c.kind, usage_ledger.c.unit)
            .order_by(usage_ledger.c.kind)
        )
        if start is not None:
            query = query.where(usage_ledger.c.created_at >= start)
        if end is not None:
            query = query.where(usage_ledger.c.created_at < end)
        return [UsageTotal(k, u, int(q or 0), int(n)) for k, u, q, n in self._conn.execute(query)]


def _rows(
    tenant_id: str, key: str, items: Sequence[Usage], at: datetime
) -> list[dict[str, object]]:
    return [
        {"tenant_id": tenant_id, "key": key, "kind": u.kind, "quantity": u.quantity,
         "unit": u.unit, "created_at": at}
        for u in items
    ]  # fmt: skip
