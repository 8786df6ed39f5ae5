"""The usage ledger: rows are only ever added, and a key counts once.

Each row is keyed by what caused it (a receipt id, a request id, an activity's stable key),
so a replayed activity or a retried request writes nothing new: the unique key
(tenant_id, key, kind) turns the second insert into a no-op.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa

from hartonomous.store.schema import usage_ledger


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
    def __init__(self, conn: sa.Connection) -> None:
        self._conn = conn

    def record(self, tenant_id: str, key: str, items: Sequence[Usage], at: datetime) -> int:
        """Append what is not there yet; returns the rows added (0 on a replay)."""
        if not items:
            return 0
        rows = [
            {"tenant_id": tenant_id, "key": key, "kind": u.kind, "quantity": u.quantity,
             "unit": u.unit, "created_at": at}
            for u in items
        ]  # fmt: skip
        if self._conn.dialect.name == "sqlite":  # one statement: the unique key decides
            from sqlalchemy.dialects.sqlite import insert

            done = self._conn.execute(insert(usage_ledger).on_conflict_do_nothing(), rows)
            return max(done.rowcount, 0)
        held = set(
            self._conn.execute(
                sa.select(usage_ledger.c.kind).where(
                    usage_ledger.c.tenant_id == tenant_id, usage_ledger.c.key == key
                )
            ).scalars()
        )
        rows = [row for row in rows if row["kind"] not in held]
        if rows:
            self._conn.execute(usage_ledger.insert(), rows)
        return len(rows)

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
