"""The keyword index on Azure SQL: the full-text index of sql/knowledge.sql.

Tenant first, then ranking: the full-text index covers ``chunks.search_text``, a persisted
computed column that prefixes each chunk's text with its tenant's term (``tnt`` and the
tenant id's hex digits, the digits 0-9 written as the letters g-p). Isolation rests on that
term being one token for the word breaker: letters only, which no breaker splits (digits
next to letters may be split, or read as numbers, by some languages' breakers). Every query
requires that term, so CONTAINSTABLE only matches, and
ranks, the caller's rows: ranking a whole multi-tenant table and joining afterwards
(FREETEXTTABLE then WHERE tenant_id) costs the sum of every tenant's matches and lets a big
tenant's hits crowd out a small one's under top-n. A filter's subquery sits in the same
statement. SQL Server maintains the index itself (change tracking AUTO): nothing to add.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa

from hartonomous.knowledge.store import ChunkHit
from hartonomous.store.schema import chunks

_TENANT = re.compile(r"[0-9A-Fa-f-]{1,36}")  # a UUID's (or any hex id's) characters
_DIGITS_AS_LETTERS = str.maketrans("0123456789", "ghijklmnop")  # TRANSLATE in sql/


def tenant_term(tenant_id: str) -> str:
    """The word every chunk of the tenant carries in ``search_text`` (see sql/knowledge.sql):
    letters only, one token for any word breaker, one per tenant (hex maps one to one)."""
    if not _TENANT.fullmatch(tenant_id):
        raise ValueError(f"tenant id {tenant_id!r} cannot be a full-text term")
    return "tnt" + tenant_id.replace("-", "").lower().translate(_DIGITS_AS_LETTERS)


def contains_condition(tenant_id: str, words: Sequence[str]) -> str:
    """A CONTAINS condition: the tenant's term and any of the words (inflected forms too).
    Words are ``\\w+`` runs and quoted: user input never becomes full-text syntax."""
    any_word = " OR ".join(f'FORMSOF(INFLECTIONAL, "{w}")' for w in words)
    return f'"{tenant_term(tenant_id)}" AND ({any_word})'


def keyword_statement(
    tenant_id: str, words: Sequence[str], limit: int, allowed: sa.Select[Any] | None
) -> sa.Select[Any]:
    ft = (
        sa.func.CONTAINSTABLE(
            sa.literal_column("chunks"),
            sa.literal_column("search_text"),
            sa.bindparam("condition", contains_condition(tenant_id, words), sa.Unicode()),
        )
        .table_valued(sa.column("KEY"), sa.column("RANK"))
        .alias("ft")
    )
    query = (
        sa.select(chunks.c.atom_id, ft.c.RANK)
        .join_from(ft, chunks, chunks.c.seq == ft.c.KEY)
        .where(chunks.c.tenant_id == tenant_id)
        .order_by(ft.c.RANK.desc())
        .limit(limit)
    )
    if allowed is not None:
        query = query.where(chunks.c.atom_id.in_(allowed))
    return query


class FullTextKeywordIndex:
    def add(self, conn: sa.Connection, tenant_id: str, rows: Sequence[tuple[str, str]]) -> None:
        """Nothing: the full-text index follows ``chunks`` by change tracking."""

    def remove(self, conn: sa.Connection, tenant_id: str, atom_id: str) -> None:
        """Nothing: deleting the chunk row removes it from the full-text index."""

    def search(
        self,
        conn: sa.Connection,
        tenant_id: str,
        words: Sequence[str],
        limit: int,
        allowed: sa.Select[Any] | None = None,
    ) -> list[ChunkHit]:
        rows = conn.execute(keyword_statement(tenant_id, words, limit, allowed))
        return [ChunkHit(r[0], float(r[1])) for r in rows]
