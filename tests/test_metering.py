"""The usage ledger's contract on both insert-or-ignore adapters: SQLite's one statement and
Azure SQL's look-then-insert in a savepoint (portable: it runs on SQLite too, where it is
tested, a lost race included)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import pytest
import sqlalchemy as sa

from conftest import TenantKeys
from hartonomous.billing.credits import CreditRepository
from hartonomous.billing.money import CreditTerms
from hartonomous.bootstrap import Platform
from hartonomous.metering.ledger import Usage, UsageRepository
from hartonomous.ports import InsertOrIgnore
from hartonomous.store.schema import usage_ledger
from hartonomous.store.upsert import PortableInsertOrIgnore, SqliteInsertOrIgnore

AT = datetime(2026, 11, 21, tzinfo=UTC)
TOKENS = Usage("generation.completion_tokens", 64, "tokens")
PROMPT = Usage("generation.prompt_tokens", 200, "tokens")
ADAPTERS: dict[str, InsertOrIgnore] = {
    "sqlite": SqliteInsertOrIgnore(),
    "portable": PortableInsertOrIgnore(),
}


def usage_on(conn: sa.Connection, adapter: InsertOrIgnore) -> UsageRepository:
    return UsageRepository(conn, adapter, CreditRepository(conn, adapter, CreditTerms()))


def rows(conn: sa.Connection, key: str) -> list[tuple[str, int]]:
    query = sa.select(usage_ledger.c.kind, usage_ledger.c.quantity).where(usage_ledger.c.key == key)
    return sorted((k, q) for k, q in conn.execute(query))


@pytest.fixture(params=list(ADAPTERS))
def adapter(request: pytest.FixtureRequest) -> InsertOrIgnore:
    return ADAPTERS[request.param]


def test_a_key_counts_once(platform: Platform, alice: TenantKeys, adapter: InsertOrIgnore) -> None:
    with platform.engines.write.begin() as conn:
        ledger = usage_on(conn, adapter)
        assert ledger.record(alice.id, "r1", [TOKENS], AT) == 1
        assert ledger.record(alice.id, "r1", [TOKENS, PROMPT], AT) == 1  # only the new kind
        assert ledger.record(alice.id, "r1", [TOKENS, PROMPT], AT) == 0
        assert ledger.record(alice.id, "r1", [], AT) == 0
        assert rows(conn, "r1") == [("generation.completion_tokens", 64),
                                    ("generation.prompt_tokens", 200)]  # fmt: skip
        totals = {t.kind: (t.quantity, t.events) for t in ledger.totals(alice.id, None, None)}
        assert totals == {"generation.completion_tokens": (64, 1),
                          "generation.prompt_tokens": (200, 1)}  # fmt: skip


class RacedInsert(PortableInsertOrIgnore):
    """Its first look misses what another writer has just committed, as two concurrent
    transactions on Azure SQL can."""

    def __init__(self) -> None:
        self.looks = 0

    def held(
        self, conn: sa.Connection, table: sa.Table, rows: Sequence[dict[str, Any]],
        key: Sequence[str],
    ) -> set[tuple[Any, ...]]:  # fmt: skip
        if table is not usage_ledger:  # the credit account's insert: not raced here
            return super().held(conn, table, rows, key)
        self.looks += 1
        return set() if self.looks == 1 else super().held(conn, table, rows, key)


def test_losing_the_race_rolls_back_only_the_savepoint_and_counts_once(
    platform: Platform, alice: TenantKeys
) -> None:
    with platform.engines.write.begin() as conn:
        usage_on(conn, PortableInsertOrIgnore()).record(alice.id, "r2", [TOKENS], AT)
        raced = RacedInsert()
        assert usage_on(conn, raced).record(alice.id, "r2", [TOKENS, PROMPT], AT) == 1
        # The held kind: the conflict, then a second look; the new kind: one look.
        assert raced.looks == 3
        # The caller's transaction is whole: its earlier row and later work both stand.
        usage_on(conn, PortableInsertOrIgnore()).record(alice.id, "r3", [TOKENS], AT)
    with platform.engines.read.connect() as conn:
        assert rows(conn, "r2") == [("generation.completion_tokens", 64),
                                    ("generation.prompt_tokens", 200)]  # fmt: skip
        assert rows(conn, "r3") == [("generation.completion_tokens", 64)]


def test_the_portable_look_binds_few_parameters_for_many_keys(
    platform: Platform, alice: TenantKeys
) -> None:
    many = [{"tenant_id": alice.id, "key": "bulk", "kind": f"k{i}", "quantity": 1,
             "unit": "u", "created_at": AT} for i in range(3000)]  # fmt: skip
    with platform.engines.write.begin() as conn:
        insert = PortableInsertOrIgnore()
        assert insert(conn, usage_ledger, many, UsageRepository.KEY) == 3000
        assert insert(conn, usage_ledger, many, UsageRepository.KEY) == 0
