"""Capability search: what a tenant could build an agent from, ranked by one score.

Four kinds of candidates: the tenant's models (found by their profile documents, plus the
platform's built-in model), its knowledge (chunks of its documents), the registry's actions
(agents' tools and the loop's actions) and the tenant's concepts. Scores must compare across
kinds, so every candidate is scored the same way: the cosine between the query's embedding
and the item's (a chunk's stored vector, a description's embedding, a concept's centroid).
The query is embedded once per request and handed to every search.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum

import numpy as np

from hartonomous.autonomy.registry import REGISTRY, ActionSpec
from hartonomous.inference.types import BUILTIN_MODEL
from hartonomous.knowledge.embeddings import Vectors
from hartonomous.knowledge.runtime import Knowledge
from hartonomous.knowledge.search import Mode, SearchResult
from hartonomous.knowledge.store import query_words
from hartonomous.models.store import ModelRecord
from hartonomous.ports import Embedder, UnitOfWorkFactory
from hartonomous.services.clock import new_id

_WORD = re.compile(r"\w+", re.UNICODE)
PASSAGE_CHARS = 300  # of a matched chunk, shown in ``why``
REFETCHES = 3  # deeper knowledge searches when profile chunks took the places of documents'
# The built-in model has no profile document (it is no tenant's): this text stands for one,
# in the style of models/profile.py's.
BUILTIN_PROFILE = (
    f"{BUILTIN_MODEL}: the platform's built-in language model, Google's Gemma 3 270M, a "
    "270M-parameter gemma3 model in GGUF format quantized as Q4_K_M. Has a chat template: an "
    "instruction-tuned chat model. Runs in process on CPU: small and fast text generation, "
    "chat, short answers and summaries grounded in retrieved passages. Context length 32768 "
    "tokens."
)
_STOPWORDS = frozenset(
    [
        "a",
        "an",
        "and",
        "are",
        "as",
        "at",
        "be",
        "by",
        "can",
        "for",
        "from",
        "has",
        "have",
        "how",
        "i",
        "in",
        "is",
        "it",
        "its",
        "me",
        "my",
        "of",
        "on",
        "or",
        "our",
        "that",
        "the",
        "their",
        "this",
        "to",
        "was",
        "what",
        "when",
        "where",
        "which",
        "who",
        "why",
        "will",
        "with",
        "you",
        "your",
    ]
)


class Kind(StrEnum):
    MODEL = "model"
    KNOWLEDGE = "knowledge"
    TOOL = "tool"
    CONCEPT = "concept"  # by its centroid (docs/concepts.md)


UNAVAILABLE: frozenset[Kind] = frozenset()  # kinds no search can serve yet


@dataclass(frozen=True)
class Why:
    """Why a candidate matched: its passage and keyword highlights (models, knowledge), its
    vector and keyword scores, the words it shares with the query (models, tools)."""

    passage: str | None = None
    highlights: tuple[str, ...] = ()
    vector_score: float | None = None
    keyword_score: float | None = None
    shared_words: tuple[str, ...] = ()


@dataclass(frozen=True)
class Capability:
    kind: Kind
    id: str  # a model's id, a chunk's atom id, a tool's name
    score: float  # cosine of the query's embedding and the item's
    title: str
    why: Why
    status: str | None = None  # a model's
    document_id: str | None = None  # a chunk's document
    filename: str | None = None  # that document's, when its metadata names one
    callers: tuple[str, ...] = ()  # a tool's: who may call it (agent, loop)
    requires_approval: bool | None = None  # a tool's default when the policy is silent


@dataclass(frozen=True)
class CapabilitySearch:
    query: str
    items: list[Capability]
    kinds_unavailable: list[Kind]


class _Embedded:
    """Texts' embeddings held for the process, by model and text: the registry's
    descriptions and the built-in profile are embedded once, not per search."""

    def __init__(self) -> None:
        self._held: dict[tuple[str, str], Vectors] = {}
        self._lock = threading.Lock()

    def matrix(self, embedder: Embedder, texts: Sequence[str]) -> Vectors:
        model = embedder.model_name
        with self._lock:
            missing = [t for t in dict.fromkeys(texts) if (model, t) not in self._held]
        if missing:
            vectors = embedder.embed(missing)
            with self._lock:
                self._held.update(((model, t), v) for t, v in zip(missing, vectors, strict=True))
        with self._lock:
            return np.stack([self._held[(model, t)] for t in texts])


EMBEDDED = _Embedded()


def tool_text(spec: ActionSpec) -> str:
    """What a tool is embedded as: its name in words, then its description."""
    return f"{spec.name.replace('_', ' ')}: {spec.description}"


@dataclass
class CapabilityService:
    uow_factory: UnitOfWorkFactory
    knowledge: Callable[[], Knowledge]  # built on first use: the embedder loads lazily

    def search(
        self,
        tenant_id: str,
        query: str,
        k: int = 10,
        kinds: Iterable[Kind] | None = None,
        request_id: str | None = None,
    ) -> CapabilitySearch:
        """The ``k`` best candidates of the kinds asked (all by default), inside the tenant.
        ``request_id`` keys the usage row: the searches of one request count as one."""
        wanted = set(Kind) if kinds is None else set(kinds)
        order = list(Kind)
        unavailable = sorted(wanted & UNAVAILABLE, key=order.index)
        if not wanted - UNAVAILABLE:  # nothing to embed the query for
            return CapabilitySearch(query=query, items=[], kinds_unavailable=unavailable)
        knowledge = self.knowledge()
        key = request_id or new_id()
        found: list[Capability] = []
        vector: Vectors | None = None
        by_profile: dict[str, list[ModelRecord]] = {}
        if wanted & {Kind.MODEL, Kind.KNOWLEDGE}:
            with self.uow_factory(write=False, tenant_id=tenant_id) as uow:
                profiled = uow.models.profiled(tenant_id)
            for record in profiled:
                assert record.profile_atom_id is not None
                by_profile.setdefault(record.profile_atom_id, []).append(record)
        if Kind.KNOWLEDGE in wanted:  # first: it embeds the query, its keyword half meanwhile
            chunks, vector = self._knowledge(knowledge, tenant_id, query, k, key, by_profile)
            found += chunks
        if vector is None:
            vector = knowledge.embedder.embed([query])[0]
        if Kind.MODEL in wanted:
            found += self._models(knowledge, tenant_id, query, vector, by_profile)
        if Kind.TOOL in wanted:
            found += self._tools(knowledge.embedder, query, vector)
        if Kind.CONCEPT in wanted:
            found += self._concepts(tenant_id, query, vector)
        found.sort(key=lambda c: (-c.score, order.index(c.kind), c.id))
        return CapabilitySearch(query=query, items=found[:k], kinds_unavailable=unavailable)

    def _models(
        self,
        knowledge: Knowledge,
        tenant_id: str,
        query: str,
        vector: Vectors,
        by_profile: dict[str, list[ModelRecord]],
    ) -> list[Capability]:
        """Each of the tenant's models by its best profile chunk, and the built-in model by
        its built-in profile.

        The profiles are scored directly (their chunks' stored embeddings, read by document
        id), not through a search with the metadata filter ``{"kind": "model-profile"}``:
        such a filter reads every document's metadata JSON, and at 10k chunks the filtered
        hybrid search cost 62 ms p50 (bench/agents.py), past the whole request's 50 ms
        goal, where this read costs ~1 ms. A tenant has few models: all are scored."""
        builtin = float(EMBEDDED.matrix(knowledge.embedder, [BUILTIN_PROFILE])[0] @ vector)
        words = _asked(query)
        best: dict[str, Capability] = {
            BUILTIN_MODEL: Capability(
                Kind.MODEL, BUILTIN_MODEL, builtin, BUILTIN_MODEL,
                _profile_why(BUILTIN_PROFILE, words, builtin), status="ready",
            )
        }  # fmt: skip
        if not by_profile:
            return list(best.values())
        model = knowledge.embedder.model_name
        with self.uow_factory(write=False, tenant_id=tenant_id) as uow:
            rows = uow.knowledge.document_chunk_vectors(tenant_id, model, sorted(by_profile))
        if not rows:  # profiles not indexed yet
            return list(best.values())
        matrix = np.frombuffer(b"".join(r[3] for r in rows), dtype=np.float32)
        cosines = (matrix.reshape(len(rows), -1) * vector).sum(axis=1)
        for (document_id, _, text, _), cosine in zip(rows, cosines, strict=True):
            score = float(cosine)
            for record in by_profile[document_id]:
                if record.id not in best or best[record.id].score < score:
                    best[record.id] = Capability(
                        Kind.MODEL, record.id, score, record.name,
                        _profile_why(text, words, score), status=record.status,
                    )  # fmt: skip
        return list(best.values())

    def _knowledge(
        self,
        knowledge: Knowledge,
        tenant_id: str,
        query: str,
        k: int,
        key: str,
        by_profile: dict[str, list[ModelRecord]],
    ) -> tuple[list[Capability], Vectors]:
        """Chunks of the tenant's documents, model profiles left out (they are models), and
        the query's embedding. A search filter cannot say "not", so profile chunks are
        dropped after, and the search asked deeper while they took places and it had more
        to give. The first search embeds the query while SQLite runs its keyword half on the
        other core: the whole capability search 41.1 ms p50 / 51.2 p95, where embedding
        first, then searching took 46.2 / 61.8 (interleaved, 400 queries each, 10k chunks)."""
        fetch = k + min(len(by_profile), k)
        vector: Vectors | None = None
        for _ in range(REFETCHES):
            hits, vector = knowledge.search.search_embedded(
                tenant_id=tenant_id, query=query, k=fetch, mode=Mode.HYBRID, request_id=key,
                record_gaps=False, query_vector=vector,
            )  # fmt: skip
            kept = [h for h in hits if h.document_id not in by_profile]
            if len(kept) >= k or len(hits) < fetch:
                break
            fetch *= 2
        assert vector is not None  # a hybrid search embeds the query
        kept = kept[:k]
        scores = self._cosines(knowledge, tenant_id, vector, kept)
        documents = {h.document_id for h in kept if h.document_id}
        with self.uow_factory(write=False, tenant_id=tenant_id) as uow:
            atoms = uow.atoms.get_many(tenant_id, sorted(documents))
        out = []
        for hit in kept:
            atom = atoms.get(hit.document_id or "")
            meta = atom.metadata if atom is not None and isinstance(atom.metadata, dict) else {}
            filename = meta.get("filename")
            filename = filename if isinstance(filename, str) else None
            title = filename or _first_line(hit.text)
            out.append(
                Capability(
                    Kind.KNOWLEDGE, hit.atom_id, scores[hit.atom_id], title, _why(hit),
                    document_id=hit.document_id, filename=filename,
                )
            )  # fmt: skip
        return out, vector

    def _cosines(
        self, knowledge: Knowledge, tenant_id: str, vector: Vectors, hits: list[SearchResult]
    ) -> dict[str, float]:
        """Each hit's cosine to the query. A hybrid hit found by the vector index carries it;
        one found by its words alone (or lifted by a learned association) does not, and its
        chunk's stored embedding gives it: one indexed read of a few rows, exact. Measured
        at 10k chunks (bench/agents.py; 23% of queries had such hits in their top 10): 1.7-2.6
        ms p50, where a second, vector-mode search deep enough to reach them took 12-16 ms
        (and a shallower one may miss a chunk ranked below its depth), and embedding the
        chunk's text again costs ~20 ms a chunk on these two cores."""
        scores = {h.atom_id: h.vector_score for h in hits if h.vector_score is not None}
        missing = [h.atom_id for h in hits if h.atom_id not in scores]
        if missing:
            model = knowledge.embedder.model_name
            with self.uow_factory(write=False, tenant_id=tenant_id) as uow:
                stored = uow.knowledge.chunk_embeddings(tenant_id, model, missing)
            for atom_id, raw in stored.items():
                scores[atom_id] = float(np.frombuffer(raw, dtype=np.float32) @ vector)
        return {h.atom_id: float(scores.get(h.atom_id, 0.0)) for h in hits}

    def _concepts(self, tenant_id: str, query: str, vector: Vectors) -> list[Capability]:
        """The tenant's active concepts by their centroid: a mean of unit chunk vectors
        renormalised, so its cosine to the query compares with a chunk's."""
        with self.uow_factory(write=False, tenant_id=tenant_id) as uow:
            rows = uow.concepts.all_active(tenant_id)
        if not rows:
            return []
        matrix = np.frombuffer(b"".join(r.centroid for r in rows), dtype=np.float32)
        cosines = (matrix.reshape(len(rows), -1) * vector).sum(axis=1)
        asked = _asked(query)
        return [
            Capability(
                Kind.CONCEPT, row.id, float(score), row.name,
                Why(passage=", ".join(row.terms), vector_score=float(score),
                    shared_words=tuple(t for t in row.terms if t in asked)),
            )
            for row, score in zip(rows, cosines, strict=True)
        ]  # fmt: skip

    @staticmethod
    def _tools(embedder: Embedder, query: str, vector: Vectors) -> list[Capability]:
        specs = sorted(REGISTRY.values(), key=lambda s: s.name)
        matrix = EMBEDDED.matrix(embedder, [tool_text(s) for s in specs])
        # Elementwise, not a BLAS call (knowledge/search.py: OpenBLAS's threads spin after
        # each call and starve torch embedding the next query).
        cosines = (matrix * vector).sum(axis=1)
        asked = _asked(query)
        out = []
        for spec, score in zip(specs, cosines, strict=True):
            shared = tuple(w for w in query_words(tool_text(spec)) if w in asked)
            out.append(
                Capability(
                    Kind.TOOL, spec.name, float(score), spec.name,
                    Why(passage=spec.description, vector_score=float(score),
                        shared_words=shared),
                    callers=tuple(sorted(c.value for c in spec.callers)),
                    requires_approval=spec.default_requires_approval,
                )
            )  # fmt: skip
        return out


def _asked(query: str) -> set[str]:
    """The query's words worth showing as shared: no stop words, no single letters."""
    return {w for w in query_words(query) if w not in _STOPWORDS and len(w) > 1}


def _profile_why(text: str, words: set[str], score: float) -> Why:
    """A profile's passage; its lines holding the query's words, those marked, as keyword
    highlights are (a profile is a few short lines: models/profile.py)."""

    def mark(m: re.Match[str]) -> str:
        return f"<mark>{m[0]}</mark>" if m[0].lower() in words else m[0]

    marked = [_WORD.sub(mark, line) for line in text.splitlines()]
    return Why(
        passage=text[:PASSAGE_CHARS],
        highlights=tuple(m[:PASSAGE_CHARS] for m in marked if "<mark>" in m)[:3],
        vector_score=score,
        shared_words=tuple(dict.fromkeys(w for w in query_words(text) if w in words)),
    )


def _why(hit: SearchResult) -> Why:
    return Why(
        passage=hit.text[:PASSAGE_CHARS],
        highlights=tuple(hit.highlights),
        vector_score=hit.vector_score,
        keyword_score=hit.keyword_score,
    )


def _first_line(text: str) -> str:
    line = text.strip().splitlines()[0] if text.strip() else ""
    return line[:120] or "(untitled passage)"
