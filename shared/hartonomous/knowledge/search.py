"""Search inside one tenant: by meaning (vectors), by words (BM25), or both (RRF)."""

from __future__ import annotations

import logging
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from enum import StrEnum

from hartonomous.knowledge.store import ChunkHit, SearchFilter
from hartonomous.metering.ledger import Usage
from hartonomous.ports import Embedder, VectorSearch
from hartonomous.services.clock import new_id, utcnow
from hartonomous.store.background import BackgroundWriter
from hartonomous.store.unit_of_work import UnitOfWorkFactory

log = logging.getLogger(__name__)
RRF_K = 60  # the constant of reciprocal rank fusion (Cormack et al.)


class Mode(StrEnum):
    VECTOR = "vector"
    KEYWORD = "keyword"
    HYBRID = "hybrid"


@dataclass(frozen=True)
class SearchResult:
    atom_id: str
    score: float
    rank: int
    text: str
    document_id: str | None
    ordinal: int | None
    start: int | None
    end: int | None
    highlights: list[str]
    vector_score: float | None = None
    keyword_score: float | None = None


@dataclass
class SearchService:
    uow_factory: UnitOfWorkFactory
    embedder: Embedder
    index: VectorSearch
    writes: BackgroundWriter  # knowledge gaps and usage, off the search's latency
    gap_threshold: float = 0.35  # cosine under which the best answer is a knowledge gap
    _pool: ThreadPoolExecutor = field(
        default_factory=lambda: ThreadPoolExecutor(4, thread_name_prefix="keyword-search"),
        repr=False,
    )

    def search(
        self,
        *,
        tenant_id: str,
        query: str,
        k: int = 10,
        mode: Mode = Mode.HYBRID,
        flt: SearchFilter | None = None,
        request_id: str | None = None,
    ) -> list[SearchResult]:
        """``request_id`` keys the usage row: a retried request with the same id counts once
        (the caller's ``X-Request-Id``, or a receipt's id)."""
        flt = flt or SearchFilter()
        depth = k if mode != Mode.HYBRID else max(4 * k, 40)
        vector_hits: list[tuple[str, float]] = []
        keyword_hits: list[ChunkHit] = []
        keywords: Future[list[ChunkHit]] | None = None
        if mode in (Mode.KEYWORD, Mode.HYBRID):
            # The filter goes inside each query (candidates restricted before ranking), so
            # nothing is over-fetched for it. In hybrid mode SQLite runs the keyword query on
            # another thread while torch embeds the query (both release the GIL).
            keywords = self._pool.submit(self._keyword_hits, tenant_id, query, depth + 8, flt)
        if mode in (Mode.VECTOR, Mode.HYBRID):
            query_vector = self.embedder.embed([query], spare_core=keywords is not None)[0]
            vector_hits = self.index.search(tenant_id, query_vector, depth + 8, flt)
        if keywords is not None:
            keyword_hits = keywords.result()

        vec = {a: s for a, s in vector_hits}
        kw = {h.atom_id: h for h in keyword_hits}
        if mode == Mode.VECTOR:
            ranked = [(a, s) for a, s in vector_hits]
        elif mode == Mode.KEYWORD:
            ranked = [(h.atom_id, h.score) for h in keyword_hits]
        else:
            fused: dict[str, float] = {}
            for hits in ([a for a, _ in vector_hits], [h.atom_id for h in keyword_hits]):
                for rank, atom_id in enumerate(hits[:depth], start=1):
                    fused[atom_id] = fused.get(atom_id, 0.0) + 1.0 / (RRF_K + rank)
            ranked = sorted(fused.items(), key=lambda item: -item[1])

        with self.uow_factory(write=False, tenant_id=tenant_id) as uow:
            info = uow.knowledge.describe(
                tenant_id, [a for a, _ in ranked[: k + 8]], self._documents(flt)
            )
        results: list[SearchResult] = []
        for atom_id, score in ranked:
            chunk = info.get(atom_id)
            if chunk is None:  # deleted since it was indexed
                continue
            hit = kw.get(atom_id)
            results.append(
                SearchResult(
                    atom_id=atom_id,
                    score=score,
                    rank=len(results) + 1,
                    text=chunk.text,
                    document_id=chunk.document_id,
                    ordinal=chunk.ordinal,
                    start=chunk.start,
                    end=chunk.end,
                    highlights=[hit.highlight] if hit and hit.highlight else [],
                    vector_score=vec.get(atom_id),
                    keyword_score=hit.score if hit else None,
                )
            )
            if len(results) == k:
                break
        self._maybe_gap(tenant_id, query, mode, results, vector_hits)
        key = f"search:{request_id or new_id()}"
        self.writes.submit(
            tenant_id,
            lambda uow: uow.usage.record(
                tenant_id, key, [Usage("search.queries", 1, "queries")], utcnow()
            ),
        )
        return results

    def _keyword_hits(
        self, tenant_id: str, query: str, limit: int, flt: SearchFilter
    ) -> list[ChunkHit]:
        with self.uow_factory(write=False, tenant_id=tenant_id) as uow:
            return uow.knowledge.keyword_search(tenant_id, query, limit, flt)

    @staticmethod
    def _documents(flt: SearchFilter) -> set[str] | None:
        return {flt.document_id} if flt.document_id else None

    def _maybe_gap(
        self,
        tenant_id: str,
        query: str,
        mode: Mode,
        results: list[SearchResult],
        vector_hits: list[tuple[str, float]],
    ) -> None:
        best = vector_hits[0][1] if vector_hits else None
        gap = not results or (mode != Mode.KEYWORD and (best is None or best < self.gap_threshold))
        if gap:
            at = utcnow()
            self.writes.submit(
                tenant_id,
                lambda uow: uow.knowledge.record_gap(tenant_id, query, mode.value, best, at),
            )
