"""What the loop taught search (``uow.associations``): learned associations and duplicates.

A learned association links a knowledge-gap query (stored as an atom, with its vector) to
the chunk atom that answers it: a ``learned_associations`` row and a ``LEARNED_ASSOCIATION``
edge (query atom -> chunk). Near-duplicate chunks are ``DUPLICATE_OF`` edges (duplicate ->
canonical). Both carry the action's id as ``receipt_id``, so an action's effects are found,
re-applied and reverted by its id alone.

Search reads both in one statement per search (``search_signals``): the tenant's
associations of the query's embedding model, and the duplicate links that touch its
candidates.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from hartonomous.knowledge.store import chunk_vectors
from hartonomous.store.repositories import IN_BATCH, batched
from hartonomous.store.schema import (
    chunks,
    edges,
    embeddings,
    knowledge_gaps,
    learned_associations,
)

if TYPE_CHECKING:
    from hartonomous.ports import InsertOrIgnore

LEARNED_ASSOCIATION = "LEARNED_ASSOCIATION"  # query atom -> the chunk that answers it
DUPLICATE_OF = "DUPLICATE_OF"  # duplicate chunk -> its canonical chunk
EDGE_KEY = ("tenant_id", "src_id", "kind", "ordinal", "receipt_id")
_WORD = re.compile(r"\w+", re.UNICODE)


def normalise_query(text: str) -> str:
    """Lower-cased words joined by one space: keyword search lifts on this matching exactly."""
    return " ".join(_WORD.findall(text.lower()))


@dataclass(frozen=True)
class Association:
    id: str
    action_id: str
    query: str
    query_atom_id: str
    atom_id: str
    query_vector: bytes


@dataclass(frozen=True)
class SearchSignals:
    # None: not read, the caller's copy of this ``version`` is current (``known``).
    associations: list[Association] | None
    duplicate_links: list[tuple[str, str]]  # (duplicate, canonical)
    allowed_targets: set[str] | None  # of ``lifted``, those the filter allows (None: no filter)
    # (count, newest created_at as text) of the tenant's associations of the model: a row
    # added or removed changes it (a new row is the newest), so a cached copy is checked
    # against it for the price of one aggregate.
    version: tuple[str, str | None] = ("0", None)


class AssociationRepository:
    def __init__(self, conn: sa.Connection, insert_or_ignore: InsertOrIgnore) -> None:
        self._conn = conn
        self._insert_new = insert_or_ignore

    # -- learned associations ----------------------------------------------------------------

    def add_association(self, row: dict[str, Any]) -> bool:
        """The row and its edge; False (nothing written) when the action already added it."""
        added = self._insert_new(
            self._conn, learned_associations, [row], ("tenant_id", "action_id")
        )
        if added:
            self._add_edges(
                [(row["tenant_id"], LEARNED_ASSOCIATION, row["query_atom_id"], row["atom_id"],
                  row["action_id"], row["created_at"])]
            )  # fmt: skip
        return bool(added)

    def association_for_action(self, tenant_id: str, action_id: str) -> Association | None:
        t = learned_associations
        row = self._conn.execute(
            t.select().where(t.c.tenant_id == tenant_id, t.c.action_id == action_id)
        ).first()
        return _association(row) if row else None

    def remove_association(self, tenant_id: str, action_id: str) -> int:
        """The action's association and edge (nothing when already gone)."""
        t = learned_associations
        done = self._conn.execute(
            t.delete().where(t.c.tenant_id == tenant_id, t.c.action_id == action_id)
        )
        self._remove_edges(tenant_id, LEARNED_ASSOCIATION, action_id)
        return int(done.rowcount)

    def forget_atom(self, tenant_id: str, atom_id: str) -> None:
        """Before an atom goes: the associations that name it (its edges go with the atom's)."""
        t = learned_associations
        self._conn.execute(
            t.delete().where(
                t.c.tenant_id == tenant_id,
                sa.or_(t.c.atom_id == atom_id, t.c.query_atom_id == atom_id),
            )
        )

    # -- duplicates --------------------------------------------------------------------------

    def add_duplicates(
        self, tenant_id: str, pairs: Sequence[tuple[str, str]], action_id: str, at: datetime
    ) -> int:
        """``DUPLICATE_OF`` edges (duplicate, canonical) keyed by the action: a replay adds
        nothing."""
        return self._add_edges(
            [(tenant_id, DUPLICATE_OF, dup, canon, action_id, at) for dup, canon in pairs]
        )

    def remove_duplicates(self, tenant_id: str, action_id: str) -> int:
        return self._remove_edges(tenant_id, DUPLICATE_OF, action_id)

    def duplicate_links(self, tenant_id: str, atom_ids: Collection[str]) -> set[tuple[str, str]]:
        """(duplicate, canonical) links with either end among ``atom_ids``."""
        found: set[tuple[str, str]] = set()
        for batch in batched(sorted(atom_ids), IN_BATCH // 2):
            for query in self._links(tenant_id, batch):
                found |= {(r[0], r[1]) for r in self._conn.execute(query)}
        return found

    # -- what search reads -------------------------------------------------------------------

    def search_signals(
        self,
        tenant_id: str,
        model: str,
        batch: Sequence[str],
        allowed: sa.Select[Any] | None = None,
        lifted: Sequence[str] = (),
        known: tuple[str, str | None] | None = None,
    ) -> SearchSignals:
        """One statement: the version of the tenant's associations for ``model`` and, unless
        it is ``known`` (the caller's copy is current), their rows in a second; the duplicate
        links that touch ``batch`` (a search's candidates and the atoms it lifts); with a
        filter (``allowed``: the chunks it allows), which of ``lifted`` it allows. Atoms past
        one IN list (only with k over 240) take one more statement per batch."""
        batches = list(batched(batch, IN_BATCH // 2)) or [[]]
        statement = _unfiltered_signals() if allowed is None else _signals_statement(allowed)
        values = {"tenant": tenant_id, "model": model, "batch": batches[0],
                  "lifted": list(lifted)[: IN_BATCH // 2]}  # fmt: skip
        links: set[tuple[str, str]] = set()
        permitted: set[str] = set()
        version: tuple[str, str | None] = ("0", None)
        for row in self._conn.execute(statement, values):
            if row.part == "v":
                version = (str(row.a), None if row.q is None else str(row.q))
            elif row.part == "d":
                links.add((row.a, row.b))
            else:
                permitted.add(row.a)
        associations = None
        if version != known:  # no copy, or changed since it was read
            associations, version = self.associations(tenant_id, model)
        for more in batches[1:]:
            links |= self.duplicate_links(tenant_id, more)
        if allowed is not None and len(lifted) > IN_BATCH // 2:
            permitted |= self.allowed_among(allowed, list(lifted)[IN_BATCH // 2 :])
        return SearchSignals(
            associations, sorted(links), permitted if allowed is not None else None, version
        )

    def associations(
        self, tenant_id: str, model: str
    ) -> tuple[list[Association], tuple[str, str | None]]:
        """The tenant's associations for ``model`` with their version (one statement)."""
        found: list[Association] = []
        version: tuple[str, str | None] = ("0", None)
        for row in self._conn.execute(_association_rows(), {"tenant": tenant_id, "model": model}):
            if row.part == "a":
                found.append(Association(row.a, row.x, row.q, row.y, row.b, bytes(row.v)))
            else:
                version = (str(row.a), None if row.q is None else str(row.q))
        return found, version

    def allowed_among(self, allowed: sa.Select[Any], atom_ids: Collection[str]) -> set[str]:
        """Those of ``atom_ids`` that the filter's ``allowed`` chunks include."""
        found: set[str] = set()
        for batch in batched(sorted(atom_ids)):
            query = allowed.where(edges.c.dst_id.in_(batch))
            found |= {str(r[0]) for r in self._conn.execute(query)}
        return found

    # -- what actions check and measure -----------------------------------------------------

    def chunk_ids(self, tenant_id: str, atom_ids: Collection[str]) -> set[str]:
        """Those of ``atom_ids`` that are chunk atoms of the tenant."""
        found: set[str] = set()
        for batch in batched(sorted(atom_ids)):
            found |= set(
                self._conn.execute(
                    sa.select(chunks.c.atom_id).where(
                        chunks.c.atom_id.in_(batch), _not_indexed(chunks.c.tenant_id) == tenant_id
                    )
                ).scalars()
            )
        return found

    def association_count(self, tenant_id: str) -> int:
        """The tenant's learned associations, of every model (what the cap counts)."""
        t = learned_associations
        query = sa.select(sa.func.count()).select_from(t).where(t.c.tenant_id == tenant_id)
        return int(self._conn.execute(query).scalar_one())

    def gap_queries(self, tenant_id: str, until: datetime | None, limit: int) -> list[str]:
        """The queries of the tenant's newest ``limit`` knowledge gaps recorded at or before
        ``until`` (None: up to now), newest first."""
        g = knowledge_gaps
        query = sa.select(g.c.query).where(g.c.tenant_id == tenant_id)
        if until is not None:
            query = query.where(g.c.created_at <= until)
        query = query.order_by(g.c.created_at.desc(), g.c.id.desc()).limit(limit)
        return [str(q) for q in self._conn.execute(query).scalars()]

    def atom_in_use(self, tenant_id: str, atom_id: str) -> bool:
        """Whether an association, an edge or a chunk of the tenant names the atom (a
        reverted association's query atom goes only when none does)."""
        la = learned_associations
        uses = [
            sa.select(la.c.id).where(
                la.c.tenant_id == tenant_id,
                sa.or_(la.c.query_atom_id == atom_id, la.c.atom_id == atom_id),
            ),
            sa.select(edges.c.src_id).where(edges.c.tenant_id == tenant_id,
                                            edges.c.src_id == atom_id),
            sa.select(edges.c.dst_id).where(edges.c.tenant_id == tenant_id,
                                            edges.c.dst_id == atom_id),
            sa.select(chunks.c.atom_id).where(chunks.c.tenant_id == tenant_id,
                                              chunks.c.atom_id == atom_id),
        ]  # fmt: skip
        return any(self._conn.execute(use.limit(1)).first() for use in uses)

    def chunk_vectors(
        self, tenant_id: str, atom_ids: Collection[str], model: str
    ) -> dict[str, tuple[str, bytes]]:
        """atom id -> (chunk text, stored vector) for the tenant's chunks among ``atom_ids``."""
        out: dict[str, tuple[str, bytes]] = {}
        for batch in batched(sorted(atom_ids)):
            rows = self._conn.execute(
                sa.select(chunks.c.atom_id, chunks.c.text, embeddings.c.vector)
                .join(
                    embeddings,
                    sa.and_(
                        embeddings.c.tenant_id == chunks.c.tenant_id,
                        embeddings.c.sha256 == chunks.c.sha256,
                        embeddings.c.model == model,
                    ),
                )
                .where(chunks.c.tenant_id == tenant_id, chunks.c.atom_id.in_(batch))
            )
            out.update((r.atom_id, (r.text, bytes(r.vector))) for r in rows)
        return out

    def recent_chunk_vectors(
        self, tenant_id: str, model: str, limit: int
    ) -> list[tuple[int, str, bytes]]:
        """(seq, atom id, vector) of the tenant's newest ``limit`` chunks, newest first."""
        query = (
            chunk_vectors(model)
            .where(chunks.c.tenant_id == tenant_id)
            .order_by(chunks.c.seq.desc())
            .limit(limit)
        )
        return [(r.seq, r.atom_id, bytes(r.vector)) for r in self._conn.execute(query)]

    # -- edges -------------------------------------------------------------------------------

    def _add_edges(self, rows: Sequence[tuple[str, str, str, str, str, datetime]]) -> int:
        # ordinal 0, not NULL: NULLs never collide in a unique key, so a replay would add again.
        values = [
            {"tenant_id": t, "kind": kind, "src_id": src, "dst_id": dst, "ordinal": 0,
             "receipt_id": action_id, "created_at": at}
            for t, kind, src, dst, action_id, at in rows
        ]  # fmt: skip
        return self._insert_new(self._conn, edges, values, EDGE_KEY) if values else 0

    def _remove_edges(self, tenant_id: str, kind: str, action_id: str) -> int:
        done = self._conn.execute(
            edges.delete().where(
                edges.c.tenant_id == tenant_id,
                edges.c.kind == kind,
                edges.c.receipt_id == action_id,
            )
        )
        return int(done.rowcount)

    @staticmethod
    def _links(tenant_id: str, batch: Sequence[str]) -> list[sa.Select[Any]]:
        """Links from or to ``batch``, one select each way (each walks its own index)."""
        return [
            sa.select(edges.c.src_id, edges.c.dst_id).where(
                edges.c.tenant_id == tenant_id, edges.c.kind == DUPLICATE_OF, way
            )
            for way in (edges.c.src_id.in_(batch), edges.c.dst_id.in_(batch))
        ]


@functools.cache
def _unfiltered_signals() -> sa.CompoundSelect[Any]:
    """Built once, not per search (building it was half its cost)."""
    return _signals_statement(None)


@functools.cache
def _association_rows() -> sa.CompoundSelect[Any]:
    """The associations of (tenant, model) with their version."""
    la = learned_associations
    rows = sa.select(sa.literal("a"), la.c.id, la.c.atom_id, la.c.query_vector, la.c.query,
                     la.c.action_id, la.c.query_atom_id).where(*_mine())  # fmt: skip
    return sa.union_all(_version(), rows)


_NULLS = (sa.cast(sa.null(), sa.LargeBinary), sa.cast(sa.null(), sa.UnicodeText))


def _mine() -> tuple[sa.ColumnElement[bool], ...]:
    la = learned_associations
    tenant = sa.bindparam("tenant", type_=sa.String(36))
    return la.c.tenant_id == tenant, la.c.model == sa.bindparam("model", type_=sa.String(100))


def _version() -> sa.Select[Any]:
    """The row ("v") of the associations' version: their count, the newest created_at as
    text (a dialect's own rendering: it is only compared with itself)."""
    la = learned_associations
    none = sa.cast(sa.null(), sa.String(36))
    columns: list[sa.ColumnElement[Any]] = [
        sa.literal("v").label("part"), sa.cast(sa.func.count(), sa.String(36)).label("a"),
        none.label("b"), _NULLS[0].label("v"),
        sa.cast(sa.func.max(la.c.created_at), sa.UnicodeText).label("q"), none.label("x"),
        none.label("y"),
    ]  # fmt: skip
    return sa.select(*columns).where(*_mine())


def _signals_statement(allowed: sa.Select[Any] | None) -> sa.CompoundSelect[Any]:
    """``search_signals``'s statement over bound parameters (tenant, model, batch, lifted)."""
    tenant = sa.bindparam("tenant", type_=sa.String(36))
    batch = sa.bindparam("batch", type_=sa.String(36), expanding=True)
    lifted = sa.bindparam("lifted", type_=sa.String(36), expanding=True)
    parts = [_version()]
    for way in (edges.c.src_id.in_(batch), edges.c.dst_id.in_(batch)):
        # One select per indexed way in: ORed in one WHERE, SQLite walks all of the tenant's
        # edges instead (2.5 ms at 5k chunks).
        parts.append(
            sa.select(sa.literal("d"), edges.c.src_id, edges.c.dst_id, *_NULLS,
                      edges.c.receipt_id, edges.c.receipt_id)
            .where(edges.c.tenant_id == tenant, edges.c.kind == DUPLICATE_OF, way)
        )  # fmt: skip
    if allowed is not None:  # allowed_chunks_query: the chunk is edges.dst_id
        column = edges.c.dst_id
        parts.append(
            allowed.with_only_columns(sa.literal("f"), column, column, *_NULLS, column, column)
            .where(column.in_(lifted))
        )  # fmt: skip
    return sa.union_all(*parts)


def _not_indexed(column: sa.Column[Any]) -> sa.ColumnElement[Any]:
    """The column, so that it filters but chooses no index: with ``tenant_id = ?`` beside an
    IN list of 50 or more atom ids, SQLite (no statistics) walks the tenant's whole
    (tenant_id, seq) index instead of seeking the atom ids' unique one. The column is NOT
    NULL, so COALESCE changes nothing else (a T-SQL built-in too)."""
    return sa.func.coalesce(column, "")


def _association(row: Any) -> Association:
    return Association(
        row.id, row.action_id, row.query, row.query_atom_id, row.atom_id, bytes(row.query_vector)
    )
