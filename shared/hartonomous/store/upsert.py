"""Insert-or-ignore, the two ways (the ``InsertOrIgnore`` port): rows whose unique key is
already held are skipped, the rest inserted, in the caller's transaction."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from hartonomous.store.repositories import batched

MAX_PARAMETERS = 2000  # under Azure SQL's 2,100 a statement


class SqliteInsertOrIgnore:
    """One statement: the unique key decides (``INSERT ... ON CONFLICT DO NOTHING``)."""

    def __call__(
        self, conn: sa.Connection, table: sa.Table, rows: Sequence[dict[str, Any]],
        key: Sequence[str],
    ) -> int:  # fmt: skip
        if not rows:
            return 0
        done = conn.execute(_ignoring(table), list(rows))
        return max(done.rowcount, 0)


@functools.cache
def _ignoring(table: sa.Table) -> Any:
    """Built once per table: the usage ledger takes two a receipt, and building it cost
    more than running it."""
    return sqlite_insert(table).on_conflict_do_nothing().execution_options(sqlite_only=True)


class PortableInsertOrIgnore:
    """Azure SQL's: look up the keys held, insert the rest inside a savepoint. Two writers of
    one key can both miss the other's rows; the loser's insert breaks the unique key, its
    savepoint rolls back (the caller's transaction stays whole) and it looks again."""

    RACE_RETRIES = 3

    def __call__(
        self, conn: sa.Connection, table: sa.Table, rows: Sequence[dict[str, Any]],
        key: Sequence[str],
    ) -> int:  # fmt: skip
        for _ in range(self.RACE_RETRIES):
            held = self.held(conn, table, rows, key)
            missing = [r for r in rows if tuple(r[c] for c in key) not in held]
            if not missing:
                return 0
            try:
                with conn.begin_nested():
                    conn.execute(table.insert(), missing)
            except sa.exc.IntegrityError:
                continue  # another writer inserted some of these keys first
            return len(missing)
        raise RuntimeError(f"{table.name}: keys kept conflicting after {self.RACE_RETRIES} tries")

    def held(
        self, conn: sa.Connection, table: sa.Table, rows: Sequence[dict[str, Any]],
        key: Sequence[str],
    ) -> set[tuple[Any, ...]]:  # fmt: skip
        """The keys of ``rows`` already in ``table``, a bounded number of parameters each."""
        columns = [table.c[c] for c in key]
        found: set[tuple[Any, ...]] = set()
        wanted = list(dict.fromkeys(tuple(r[c] for c in key) for r in rows))
        for batch in batched(wanted, max(1, MAX_PARAMETERS // len(key))):
            match = sa.or_(
                *(sa.and_(*(col == v for col, v in zip(columns, values, strict=True)))
                  for values in batch)
            )  # fmt: skip
            found |= {tuple(r) for r in conn.execute(sa.select(*columns).where(match))}
        return found
