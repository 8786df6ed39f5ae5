"""Search inside one tenant: by meaning (vectors), by words (BM25), or both (RRF)."""

from __future__ import annotations

import logging
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from enum import StrEnum

import numpy as np

from hartonomous.knowledge.associations import normalise_query
from hartonomous.knowledge.embeddings import Vectors
from hartonomous.knowledge.learned import Learned, LearnedCache
from hartonomous.knowledge.store import ChunkHit, SearchFilter, allowed_chunks_query
from hartonomous.metering.ledger import Usage
from hartonomous.ports import Embedder, VectorSearch
from hartonomous.services.clock import new_id, utcnow
from hartonomous.store.background import BackgroundWriter
from hartonomous.store.unit_of_work import UnitOfWorkFactory

log = logging.getLogger(__name__)
RRF_K = 60  # the constant of reciprocal rank fusion (Cormack et al.)
# Cosine between a search's query and a learned association's query above which the
# association's atom is lifted to the top. Measured with MiniLM (all-MiniLM-L6-v2) on 30
# paraphrase pairs of 5 questions: min 0.48, median 0.78, max 0.95 (12 of 30 >= 0.80); a
# different question on the same topic ("which planet is the hottest" / "... coldest",
# "reset my password" / "... username", 8 pairs): at most 0.742; unrelated questions: at
# most 0.385. 0.80 lifts the closer paraphrases and no same-topic different question.
LIFT_THRESHOLD = 0.80
# Deeper fetches from the indexes when collapsing duplicates leaves fewer than k: each asks
# for as many more hits as collapsing removed (a chain of duplicates may need a second).
REFETCHES = 2


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
    lifted_by: str | None = None  # the learned association that put this atom first


@dataclass
class SearchService:
    uow_factory: UnitOfWorkFactory
    embedder: Embedder
    index: VectorSearch
    writes: BackgroundWriter  # knowledge gaps and usage, off the search's latency
    gap_threshold: float = 0.35  # cosine under which the best answer is a knowledge gap
    lift_threshold: float = LIFT_THRESHOLD
    _learned: LearnedCache = field(default_factory=LearnedCache, repr=False)
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
        record_gaps: bool = True,
        query_vector: Vectors | None = None,
    ) -> list[SearchResult]:
        """The ``k`` best chunks for ``query`` inside the tenant (see ``search_embedded``)."""
        return self.search_embedded(
            tenant_id=tenant_id, query=query, k=k, mode=mode, flt=flt, request_id=request_id,
            record_gaps=record_gaps, query_vector=query_vector,
        )[0]  # fmt: skip

    def search_embedded(
        self,
        *,
        tenant_id: str,
        query: str,
        k: int = 10,
        mode: Mode = Mode.HYBRID,
        flt: SearchFilter | None = None,
        request_id: str | None = None,
        record_gaps: bool = True,
        query_vector: Vectors | None = None,
    ) -> tuple[list[SearchResult], Vectors | None]:
        """The results and the query's embedding (None in keyword mode): a caller scoring
        more than chunks against the query (capability search) embeds it here, where the
        keyword query runs on another thread meanwhile, not before the search.

        ``request_id`` keys the usage row: a retried request with the same id counts once
        (the caller's ``X-Request-Id``, or a receipt's id). ``record_gaps=False``: a replay
        (the loop measuring an action) records no knowledge gap of its own. ``query_vector``:
        the query's embedding when the caller has it already (capability search embeds once
        for several searches); it must be this embedder's vector of ``query``.

        What the loop learned applies here: a learned association whose query is close to
        this one puts its atom first (``lifted_by``), and of chunks linked ``DUPLICATE_OF``
        only the best ranked is shown."""
        flt = flt or SearchFilter()
        depth = k if mode != Mode.HYBRID else max(4 * k, 40)
        query_vector, vector_hits, keyword_hits = self._retrieve(
            tenant_id, query, mode, depth + 8, flt, query_vector
        )
        ranked = _rank(mode, vector_hits, keyword_hits, depth)
        candidates = [a for a, _ in ranked[: k + 8]]
        model = self.embedder.model_name
        held = self._learned.get(tenant_id, model)
        lifted = self._lifts(held, query, query_vector) if held else {}
        with self.uow_factory(write=False, tenant_id=tenant_id) as uow:
            allowed = None if flt.empty else allowed_chunks_query(tenant_id, flt)
            repo = uow.associations
            signals = repo.search_signals(
                tenant_id, model, [*candidates, *lifted], allowed, list(lifted),
                held.version if held else None,
            )  # fmt: skip
            links = set(signals.duplicate_links)
            permitted = signals.allowed_targets
            if signals.associations is not None:  # no copy held, or a stale one: now read
                held = self._learned.put(tenant_id, model, signals)
                fresh = self._lifts(held, query, query_vector)
                new = [a for a in fresh if a not in lifted]
                if new:
                    links |= repo.duplicate_links(tenant_id, new)
                    if allowed is not None and permitted is not None:
                        permitted |= repo.allowed_among(allowed, new)
                lifted = fresh
            if permitted is not None:  # a filter: only the atoms it allows are lifted
                lifted = {a: by for a, by in lifted.items() if a in permitted}
            if links:  # only then: the groups over all of ranked, not only the candidates
                links |= repo.duplicate_links(tenant_id, [a for a, _ in ranked])
            info = uow.knowledge.describe(
                tenant_id, list(dict.fromkeys([*lifted, *candidates])), self._documents(flt)
            )
        for _ in range(REFETCHES if links else 0):
            # Collapsing removes results: ask the indexes for as many more as it removed.
            removed = _collapsed([a for a, _ in ranked], links)
            full = len(vector_hits) >= depth + 8 or len(keyword_hits) >= depth + 8
            if not removed or not full or len(ranked) - removed >= k + 8:
                break
            depth += removed
            _, vector_hits, keyword_hits = self._retrieve(
                tenant_id, query, mode, depth + 8, flt, query_vector
            )
            ranked = _rank(mode, vector_hits, keyword_hits, depth)
            with self.uow_factory(write=False, tenant_id=tenant_id) as uow:
                links |= uow.associations.duplicate_links(tenant_id, [a for a, _ in ranked])
        lifted = {a: by for a, by in lifted.items() if a in info}
        if lifted:
            top = ranked[0][1] if ranked else 0.0
            scores = dict(ranked)
            ranked = [(a, max(scores.get(a, top), top)) for a in lifted] + [
                (a, s) for a, s in ranked if a not in lifted
            ]
        group = _duplicate_groups(sorted(links))
        vec = dict(vector_hits)
        kw = {h.atom_id: h for h in keyword_hits}
        described = set(info) | set(candidates) | set(lifted)
        shown: set[str] = set()
        results: list[SearchResult] = []
        for n, (atom_id, score) in enumerate(ranked):
            if atom_id not in described:  # past the window described: the next window
                window = [a for a, _ in ranked[n : n + k - len(results) + 8]]
                with self.uow_factory(write=False, tenant_id=tenant_id) as uow:
                    info |= uow.knowledge.describe(tenant_id, window, self._documents(flt))
                described |= set(window)
            chunk = info.get(atom_id)
            if chunk is None:  # deleted since it was indexed
                continue
            key = group.get(atom_id, atom_id)
            if key in shown:  # a duplicate of a better-ranked result
                continue
            shown.add(key)
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
                    lifted_by=lifted.get(atom_id),
                )
            )
            if len(results) == k:
                break
        if record_gaps:
            self._maybe_gap(tenant_id, query, mode, results, vector_hits)
        key = f"search:{request_id or new_id()}"
        self.writes.submit(
            tenant_id,
            lambda uow: uow.usage.record(
                tenant_id, key, [Usage("search.queries", 1, "queries")], utcnow()
            ),
        )
        return results, query_vector

    def _retrieve(
        self,
        tenant_id: str,
        query: str,
        mode: Mode,
        limit: int,
        flt: SearchFilter,
        query_vector: Vectors | None,
    ) -> tuple[Vectors | None, list[tuple[str, float]], list[ChunkHit]]:
        """(query vector, vector hits, keyword hits), ``limit`` of each the mode asks for; a
        query vector given (a second, deeper fetch) is not embedded again."""
        vector_hits: list[tuple[str, float]] = []
        keywords: Future[list[ChunkHit]] | None = None
        if mode in (Mode.KEYWORD, Mode.HYBRID):
            # The filter goes inside each query (candidates restricted before ranking), so
            # nothing is over-fetched for it. In hybrid mode SQLite runs the keyword query on
            # another thread while torch embeds the query (both release the GIL).
            keywords = self._pool.submit(self._keyword_hits, tenant_id, query, limit, flt)
        if mode in (Mode.VECTOR, Mode.HYBRID):
            if query_vector is None:
                query_vector = self.embedder.embed([query], spare_core=keywords is not None)[0]
            vector_hits = self.index.search(tenant_id, query_vector, limit, flt)
        return query_vector, vector_hits, keywords.result() if keywords is not None else []

    def _keyword_hits(
        self, tenant_id: str, query: str, limit: int, flt: SearchFilter
    ) -> list[ChunkHit]:
        with self.uow_factory(write=False, tenant_id=tenant_id) as uow:
            return uow.knowledge.keyword_search(tenant_id, query, limit, flt)

    def _lifts(self, held: Learned, query: str, query_vector: Vectors | None) -> dict[str, str]:
        """atom id -> association id of the atoms to put first, closest association first.
        Without a query vector (keyword mode) an association lifts on the same normalised
        text. (A filter is applied to the atoms after: each atom's closest association is
        its own, whichever others the filter drops.)"""
        found = held.associations
        if not found:
            return {}
        if query_vector is None:
            text = normalise_query(query)
            scored = [
                (1.0, a) for a, norm in zip(found, held.normalised, strict=True) if norm == text
            ]
        else:
            # Elementwise, not a BLAS call: OpenBLAS's threads spin after each call and would
            # starve torch embedding the next query (knowledge/vectors.py).
            cosines = (held.matrix * query_vector).sum(axis=1)
            close = np.flatnonzero(cosines >= self.lift_threshold)
            scored = [(float(cosines[i]), found[i]) for i in close]
        scored.sort(key=lambda item: (-item[0], item[1].id))
        lifts: dict[str, str] = {}
        for _, association in scored:
            lifts.setdefault(association.atom_id, association.id)
        return lifts

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


def _rank(
    mode: Mode, vector_hits: list[tuple[str, float]], keyword_hits: list[ChunkHit], depth: int
) -> list[tuple[str, float]]:
    """(atom id, score), best first: the mode's own hits, or both fused by RRF."""
    if mode == Mode.VECTOR:
        return list(vector_hits)
    if mode == Mode.KEYWORD:
        return [(h.atom_id, h.score) for h in keyword_hits]
    fused: dict[str, float] = {}
    for hits in ([a for a, _ in vector_hits], [h.atom_id for h in keyword_hits]):
        for rank, atom_id in enumerate(hits[:depth], start=1):
            fused[atom_id] = fused.get(atom_id, 0.0) + 1.0 / (RRF_K + rank)
    return sorted(fused.items(), key=lambda item: -item[1])


def _collapsed(ranked: list[str], links: set[tuple[str, str]]) -> int:
    """How many of ``ranked`` a better-ranked duplicate hides."""
    group = _duplicate_groups(sorted(links))
    keys = [group.get(a, a) for a in ranked]
    return len(keys) - len(set(keys))


def _duplicate_groups(links: list[tuple[str, str]]) -> dict[str, str]:
    """atom id -> its group's key (a canonical), over ``DUPLICATE_OF`` links followed either
    way: chains and a canonical with many duplicates make one group."""
    parent: dict[str, str] = {}

    def root(atom: str) -> str:
        while parent.get(atom, atom) != atom:
            atom = parent[atom]
        return atom

    for duplicate, canonical in sorted(links):
        a, b = root(duplicate), root(canonical)
        if a != b:
            parent[a] = b
    return {atom: root(atom) for link in links for atom in link}
