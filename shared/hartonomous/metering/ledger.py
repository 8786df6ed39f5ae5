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
    RACE_RETRIES = 3

    def __init__(self, conn: sa.Connection) -> None:
        self._conn = conn

    def record(self, tenant_id: str, key: str, items: Sequence[Usage], at: datetime) -> int:
        """Append what is not there yet; returns the rows added (0 on a replay)."""
        if not items:
            return 0
        if self._conn.dialect.name == "sqlite":  # one statement: the unique key decides
            from sqlalchemy.dialects.sqlite import insert

            rows = _rows(tenant_id, key, items, at)
            done = self._conn.execute(insert(usage_ledger).on_conflict_do_nothing(), rows)
            return max(done.rowcount, 0)
        return self._record_portably(tenant_id, key, items, at)

    def _record_portably(
        self, tenant_id: str, key: str, items: Sequence[Usage], at: datetime
    ) -> int:
        """Select what is held, insert the rest inside a savepoint. Two writers of one key can
        both miss the other's rows; the loser's insert breaks the unique key, its savepoint
        rolls back (the caller's transaction stays whole) and it looks again."""
        for _ in range(self.RACE_RETRIES):
            held = self._held_kinds(tenant_id, key)
            missing = [u for u in items if u.kind not in held]
            if not missing:
                return 0
            try:
                with self._conn.begin_nested():
                    self._conn.execute(usage_ledger.insert(), _rows(tenant_id, key, missing, at))
            except sa.exc.IntegrityError:
                continue  # another writer recorded some of this key first
            return len(missing)
        raise RuntimeError(f"usage key {key!r} kept conflicting after {self.RACE_RETRIES} tries")

    def _held_kinds(self, tenant_id: str, key: str) -> set[str]:
        return set(
            self._conn.execute(
                sa.select(usage_ledger.c.kind).where(
                    usage_ledger.c.tenant_id == tenant_id, usage_ledger.c.key == key
                )
            ).scalars()
        )

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
