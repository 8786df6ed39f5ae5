"""The usage ledger's portable path (Azure SQL's): select what is held, insert the rest in a
savepoint, and look again when another writer won the race. Run here on the real SQLite store,
which normally takes the one-statement ``ON CONFLICT DO NOTHING`` path instead."""

from __future__ import annotations

from datetime import UTC, datetime

import sqlalchemy as sa

from conftest import TenantKeys
from hartonomous.bootstrap import Platform
from hartonomous.metering.ledger import Usage, UsageRepository
from hartonomous.store.schema import usage_ledger

AT = datetime(2026, 11, 21, tzinfo=UTC)
TOKENS = Usage("generation.completion_tokens", 64, "tokens")
PROMPT = Usage("generation.prompt_tokens", 200, "tokens")


class RacedLedger(UsageRepository):
    """Its first look misses what another writer has just committed, as two concurrent
    transactions on Azure SQL can."""

    def __init__(self, conn: sa.Connection) -> None:
        super().__init__(conn)
        self.looks = 0

    def _held_kinds(self, tenant_id: str, key: str) -> set[str]:
        self.looks += 1
        return set() if self.looks == 1 else super()._held_kinds(tenant_id, key)


def rows(conn: sa.Connection, key: str) -> list[tuple[str, int]]:
    query = sa.select(usage_ledger.c.kind, usage_ledger.c.quantity).where(usage_ledger.c.key == key)
    return sorted((k, q) for k, q in conn.execute(query))


def test_a_replayed_key_adds_nothing_on_the_portable_path(
    platform: Platform, alice: TenantKeys
) -> None:
    with platform.engines.write.begin() as conn:
        ledger = UsageRepository(conn)
        assert ledger._record_portably(alice.id, "r1", [TOKENS], AT) == 1
        both = [TOKENS, PROMPT]
        assert ledger._record_portably(alice.id, "r1", both, AT) == 1  # only the new kind
        assert ledger._record_portably(alice.id, "r1", both, AT) == 0
        assert rows(conn, "r1") == [("generation.completion_tokens", 64),
                                    ("generation.prompt_tokens", 200)]  # fmt: skip


def test_losing_the_race_rolls_back_only_the_savepoint_and_counts_once(
    platform: Platform, alice: TenantKeys
) -> None:
    with platform.engines.write.begin() as conn:
        UsageRepository(conn).record(alice.id, "r2", [TOKENS], AT)  # the other writer's row
        raced = RacedLedger(conn)
        added = raced._record_portably(alice.id, "r2", [TOKENS, PROMPT], AT)
        assert (added, raced.looks) == (1, 2)  # the conflict, then a second look
        # The caller's transaction is whole: its earlier row and later work both stand.
        UsageRepository(conn).record(alice.id, "r3", [TOKENS], AT)
    with platform.engines.read.connect() as conn:
        assert rows(conn, "r2") == [("generation.completion_tokens", 64),
                                    ("generation.prompt_tokens", 200)]  # fmt: skip
        assert rows(conn, "r3") == [("generation.completion_tokens", 64)]
