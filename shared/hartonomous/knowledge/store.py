"""Knowledge rows: chunks, embeddings, edges, documents, gaps; the keyword index through its
port (FTS5 here, full-text on Azure SQL: ``keyword_sqlite.py``, ``keyword_mssql.py``).

Nothing here knows the dialect. A search filter becomes one subquery of the chunks it allows
(``allowed_chunks_query``), which the keyword and vector adapters put inside their own query:
a selective filter restricts the candidates before ranking, never a tenant-wide top list.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypeVar

import sqlalchemy as sa

from hartonomous.domain.metadata import check_filter
from hartonomous.store.json_sql import json_equals
from hartonomous.store.repositories import IN_BATCH, WriteConflict, batched
from hartonomous.store.schema import (
    atoms,
    chunks,
    concepts,
    documents,
    edges,
    embeddings,
    knowledge_gaps,
)

if TYPE_CHECKING:
    from hartonomous.ports import KeywordIndex

T = TypeVar("T")
HAS_CHUNK = "HAS_CHUNK"
# chunk atom -> its concept's description atom, weight = cosine distance (docs/concepts.md)
BELONGS_TO_CONCEPT = "BELONGS_TO_CONCEPT"
_WORD = re.compile(r"\w+", re.UNICODE)


@dataclass(frozen=True)
class ChunkHit:
    atom_id: str
    score: float
    highlight: str | None = None


@dataclass(frozen=True)
class ChunkInfo:
    atom_id: str
    text: str
    document_id: str | None
    ordinal: int | None
    start: int | None
    end: int | None


@dataclass(frozen=True)
class SearchFilter:
    modality: str | None = None
    media_type: str | None = None
    document_id: str | None = None
    concept_id: str | None = None  # only the chunks that belong to this concept
    metadata: dict[str, Any] | None = None
    created_after: datetime | None = None
    created_before: datetime | None = None
    # A knowledge snapshot (an agent's frozen scope): only chunks linked to their document
    # by an edge with id <= this, i.e. those indexed when the snapshot was taken.
    snapshot: int | None = None

    def __post_init__(self) -> None:
        """Checked here, before any SQL, by the API's own rules: a bad key or value is a 422
        from every door (API, CLI, generation)."""
        if self.metadata is not None:
            check_filter(self.metadata)

    @property
    def empty(self) -> bool:
        return not any(
            (self.modality, self.media_type, self.document_id, self.concept_id, self.metadata,
             self.created_after, self.created_before, self.snapshot is not None)
        )  # fmt: skip


def allowed_chunks_query(tenant_id: str, flt: SearchFilter) -> sa.Select[Any]:
    """The chunk atoms of the tenant's documents that pass the filter, as a subquery the
    search adapters put inside their own statement. Metadata compares by the value's JSON type."""
    doc = atoms.alias("doc")
    query = (
        sa.select(edges.c.dst_id)
        .join(doc, doc.c.id == edges.c.src_id)
        .where(edges.c.tenant_id == tenant_id, edges.c.kind == HAS_CHUNK)
    )
    if flt.document_id:
        query = query.where(edges.c.src_id == flt.document_id)
    if flt.concept_id:
        member = edges.alias("member")
        query = query.where(
            edges.c.dst_id.in_(
                sa.select(member.c.src_id)
                .join(
                    concepts,
                    sa.and_(
                        concepts.c.tenant_id == member.c.tenant_id,
                        concepts.c.atom_id == member.c.dst_id,
                    ),
                )
                .where(
                    member.c.tenant_id == tenant_id,
                    member.c.kind == BELONGS_TO_CONCEPT,
                    # a broad concept's chunks are those of the concepts it groups
                    sa.or_(
                        concepts.c.id == flt.concept_id, concepts.c.broader_id == flt.concept_id
                    ),
                )
            )
        )
    if flt.modality:
        query = query.where(doc.c.modality == flt.modality)
    if flt.media_type:
        query = query.where(doc.c.media_type == flt.media_type)
    if flt.created_after:
        query = query.where(doc.c.created_at > flt.created_after)
    if flt.created_before:
        query = query.where(doc.c.created_at < flt.created_before)
    if flt.snapshot is not None:
        query = query.where(edges.c.id <= flt.snapshot)
    for key, value in (flt.metadata or {}).items():
        query = query.where(json_equals(doc.c.metadata, key, value))
    return query


def chunk_vectors(model: str) -> sa.Select[Any]:
    """(seq, atom id, vector) of chunks joined to their embedding by ``model``."""
    return sa.select(chunks.c.seq, chunks.c.atom_id, embeddings.c.vector).join(
        embeddings,
        sa.and_(
            embeddings.c.tenant_id == chunks.c.tenant_id,
            embeddings.c.sha256 == chunks.c.sha256,
            embeddings.c.model == model,
        ),
    )


def query_words(text: str) -> list[str]:
    """A user's distinct words, lower-cased, in order (what every keyword adapter gets)."""
    return list(dict.fromkeys(_WORD.findall(text.lower())))


class KnowledgeRepository:
    def __init__(self, conn: sa.Connection, keywords: KeywordIndex) -> None:
        self._conn = conn
        self._keywords = keywords

    # -- embeddings --------------------------------------------------------------------------

    def snapshot(self, tenant_id: str) -> int:
        """The tenant's knowledge watermark: the last chunk link written (0: none yet). A
        filter with ``snapshot`` set to it sees what is indexed now, and never what comes
        after."""
        last = self._conn.execute(
            sa.select(sa.func.max(edges.c.id)).where(
                edges.c.tenant_id == tenant_id, edges.c.kind == HAS_CHUNK
            )
        ).scalar_one_or_none()
        return int(last or 0)

    def missing_embeddings(self, tenant_id: str, shas: Sequence[str], model: str) -> set[str]:
        have: set[str] = set()
        for batch in batched(shas):
            have |= set(
                self._conn.execute(
                    sa.select(embeddings.c.sha256).where(
                        embeddings.c.tenant_id == tenant_id,
                        embeddings.c.model == model,
                        embeddings.c.sha256.in_(batch),
                    )
                ).scalars()
            )
        return set(shas) - have

    def add_embeddings(
        self,
        tenant_id: str,
        model: str,
        dimension: int,
        rows: Iterable[tuple[str, bytes]],
        now: datetime,
    ) -> int:
        values = [
            {"tenant_id": tenant_id, "sha256": sha, "model": model, "dimension": dimension,
             "vector": vector, "created_at": now}
            for sha, vector in rows
        ]  # fmt: skip
        if not values:
            return 0
        try:
            self._conn.execute(embeddings.insert(), values)
        except sa.exc.IntegrityError as exc:
            raise WriteConflict("embeddings written concurrently") from exc
        return len(values)

    def vectors_since(
        self, tenant_id: str, model: str, after_seq: int, limit: int = 50_000
    ) -> list[tuple[int, str, bytes]]:
        """(chunk seq, chunk atom id, vector) of indexed chunks, in indexing order."""
        query = (
            chunk_vectors(model)
            .where(chunks.c.tenant_id == tenant_id, chunks.c.seq > after_seq)
            .order_by(chunks.c.seq)
            .limit(limit)
        )
        return [(r.seq, r.atom_id, r.vector) for r in self._conn.execute(query)]

    def chunk_embeddings(
        self, tenant_id: str, model: str, atom_ids: Sequence[str]
    ) -> dict[str, bytes]:
        """Chunk atom id -> its stored vector by ``model`` (a keyword hit's cosine to a query
        without another index search). By atom id, the tenant checked on the row, as in
        ``describe``."""
        found: dict[str, bytes] = {}
        for batch in batched(atom_ids):
            query = chunk_vectors(model).add_columns(chunks.c.tenant_id)
            for r in self._conn.execute(query.where(chunks.c.atom_id.in_(batch))):
                if r.tenant_id == tenant_id:
                    found[r.atom_id] = r.vector
        return found

    def document_chunk_vectors(
        self, tenant_id: str, model: str, document_ids: Sequence[str]
    ) -> list[tuple[str, str, str, bytes]]:
        """(document id, chunk atom id, text, vector by ``model``) of the documents' chunks,
        in document order: scoring a few known documents (model profiles) without a search
        filter, which reads every document's metadata."""
        out: list[tuple[str, str, str, bytes]] = []
        for batch in batched(document_ids):
            query = (
                chunk_vectors(model)
                .add_columns(edges.c.src_id, chunks.c.text)
                .join(edges, edges.c.dst_id == chunks.c.atom_id)
                .where(
                    edges.c.tenant_id == tenant_id,
                    edges.c.kind == HAS_CHUNK,
                    edges.c.src_id.in_(batch),
                    chunks.c.tenant_id == tenant_id,
                )
                .order_by(edges.c.src_id, edges.c.ordinal)
            )
            out += [(r.src_id, r.atom_id, r.text, r.vector) for r in self._conn.execute(query)]
        return out

    # -- chunks, edges, documents -----------------------------------------------------------

    def document(self, tenant_id: str, atom_id: str) -> Any:
        return self._conn.execute(
            documents.select().where(
                documents.c.tenant_id == tenant_id, documents.c.atom_id == atom_id
            )
        ).first()

    def chunk_atom_ids(self, tenant_id: str, shas: Sequence[str]) -> dict[str, str]:
        found: dict[str, str] = {}
        for batch in batched(shas):  # a document may have more chunks than SQL parameters
            rows = self._conn.execute(
                sa.select(chunks.c.sha256, chunks.c.atom_id).where(
                    chunks.c.tenant_id == tenant_id, chunks.c.sha256.in_(batch)
                )
            )
            found.update((r.sha256, r.atom_id) for r in rows)
        return found

    def add_chunks(self, tenant_id: str, rows: Sequence[tuple[str, str, str, int]]) -> None:
        """``(atom_id, sha256, text, token_count)`` rows, in one executemany each."""
        if not rows:
            return
        self._conn.execute(
            chunks.insert(),
            [
                {"atom_id": a, "tenant_id": tenant_id, "sha256": s, "text": t, "token_count": n}
                for a, s, t, n in rows
            ],
        )
        self._keywords.add(self._conn, tenant_id, [(a, t) for a, _, t, _ in rows])

    def add_edges(self, rows: list[dict[str, Any]]) -> None:
        if rows:
            self._conn.execute(edges.insert(), rows)

    def record_document(
        self, tenant_id: str, atom_id: str, model: str, chunk_count: int, chars: int, now: datetime
    ) -> None:
        self._conn.execute(
            documents.insert().values(
                atom_id=atom_id, tenant_id=tenant_id, model=model, chunk_count=chunk_count,
                char_count=chars, indexed_at=now,
            )
        )  # fmt: skip

    def forget_atom(self, tenant_id: str, atom_id: str) -> None:
        """Before an atom goes: its edges, its chunk row and keyword entry, its document row."""
        self._conn.execute(
            edges.delete().where(
                edges.c.tenant_id == tenant_id,
                sa.or_(edges.c.src_id == atom_id, edges.c.dst_id == atom_id),
            )
        )
        self._conn.execute(
            chunks.delete().where(chunks.c.tenant_id == tenant_id, chunks.c.atom_id == atom_id)
        )
        self._keywords.remove(self._conn, tenant_id, atom_id)
        self._conn.execute(
            documents.delete().where(
                documents.c.tenant_id == tenant_id, documents.c.atom_id == atom_id
            )
        )

    # -- search ------------------------------------------------------------------------------

    def keyword_search(
        self, tenant_id: str, query: str, limit: int, flt: SearchFilter | None = None
    ) -> list[ChunkHit]:
        """Best first, scores positive (higher is better); a filter is applied inside the
        keyword query, so its hits are ranked among the allowed chunks only."""
        words = query_words(query)
        if not words:
            return []
        allowed = None if flt is None or flt.empty else allowed_chunks_query(tenant_id, flt)
        return self._keywords.search(self._conn, tenant_id, words, limit, allowed)

    def within(self, query: Callable[[sa.Connection], T]) -> T:
        """Run a search adapter's own statement in this unit of work (Azure SQL's vectors)."""
        return query(self._conn)

    def allowed_chunks(self, tenant_id: str, flt: SearchFilter) -> set[str]:
        """Chunk atoms of the documents that pass the filter (the in-memory index's rows)."""
        found: set[str] = set(
            self._conn.execute(allowed_chunks_query(tenant_id, flt).distinct()).scalars()
        )
        return found

    def describe(
        self, tenant_id: str, atom_ids: Sequence[str], document_ids: set[str] | None
    ) -> dict[str, ChunkInfo]:
        """Text and the (most recent, or filtered) document of each chunk."""
        if not atom_ids:
            return {}
        # Looked up by the unique atom id alone, the tenant checked on the row: with the
        # tenant in the WHERE clause, SQLite (no statistics) walks the tenant's whole
        # (tenant_id, seq) index instead, 23 ms at 100k chunks instead of 0.1 ms.
        texts = {
            r.atom_id: r.text
            for batch in batched(atom_ids)
            for r in self._conn.execute(
                sa.select(chunks.c.atom_id, chunks.c.tenant_id, chunks.c.text).where(
                    chunks.c.atom_id.in_(batch)
                )
            )
            if r.tenant_id == tenant_id
        }
        # No ORDER BY in SQL: SQLite would walk the primary key (every edge) to honour it
        # instead of the (tenant_id, dst_id, kind) index. The newest link wins in Python.
        documents_in = sorted(document_ids) if document_ids is not None else None
        links: dict[str, Any] = {}
        for batch in batched(atom_ids, IN_BATCH // 2):
            for docs in [None] if documents_in is None else batched(documents_in, IN_BATCH // 2):
                query = sa.select(edges).where(
                    edges.c.tenant_id == tenant_id,
                    edges.c.kind == HAS_CHUNK,
                    edges.c.dst_id.in_(batch),
                )
                if docs is not None:
                    query = query.where(edges.c.src_id.in_(docs))
                for row in self._conn.execute(query):
                    if row.dst_id not in links or row.id > links[row.dst_id].id:
                        links[row.dst_id] = row
        out = {}
        for atom_id, text in texts.items():
            link = links.get(atom_id)
            out[atom_id] = ChunkInfo(
                atom_id,
                text,
                link.src_id if link else None,
                link.ordinal if link else None,
                link.start_offset if link else None,
                link.end_offset if link else None,
            )
        return out

    def record_gap(
        self, tenant_id: str, query: str, mode: str, best: float | None, now: datetime
    ) -> None:
        self._conn.execute(
            knowledge_gaps.insert().values(
                tenant_id=tenant_id, query=query, mode=mode, best_score=best, created_at=now
            )
        )

    def gaps(self, tenant_id: str, limit: int = 100) -> list[Any]:
        return list(
            self._conn.execute(
                knowledge_gaps.select()
                .where(knowledge_gaps.c.tenant_id == tenant_id)
                .order_by(knowledge_gaps.c.id.desc())
                .limit(limit)
            )
        )
