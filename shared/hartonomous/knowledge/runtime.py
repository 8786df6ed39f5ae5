"""The knowledge services of a platform, built on first use (the model loads lazily too)."""

from __future__ import annotations

import threading
from dataclasses import dataclass

from hartonomous.knowledge.embeddings import Embedder, MiniLMEmbedder
from hartonomous.knowledge.ingestion import Ingestion
from hartonomous.knowledge.search import SearchService
from hartonomous.knowledge.sql_vectors import SqlVectorIndex
from hartonomous.knowledge.vectors import VectorIndex, VectorSearch
from hartonomous.ports import BlobStore
from hartonomous.services.atoms import AtomService
from hartonomous.settings import Settings
from hartonomous.store.background import BackgroundWriter
from hartonomous.store.unit_of_work import UnitOfWorkFactory


@dataclass
class Knowledge:
    embedder: Embedder
    index: VectorSearch
    search: SearchService
    ingestion: Ingestion


class KnowledgeProvider:
    """One ``Knowledge`` per platform, built when first needed (not at start-up)."""

    def __init__(
        self,
        settings: Settings,
        uow_factory: UnitOfWorkFactory,
        atoms: AtomService,
        blobs: BlobStore,
        embedder: Embedder | None = None,
    ) -> None:
        self._settings, self._uow, self._atoms, self._blobs = settings, uow_factory, atoms, blobs
        self._embedder = embedder
        self._built: Knowledge | None = None
        self._lock = threading.Lock()

    def _default_embedder(self) -> Embedder:
        """MiniLM in process, or the GPU worker's when ``embedding_url`` is set."""
        s = self._settings
        if s.embedding_url:
            from hartonomous.inference.openai_http import WorkerEmbedder

            key = s.worker_key.get_secret_value() if s.worker_key else None
            return WorkerEmbedder(s.embedding_url, key)
        return MiniLMEmbedder(precision=s.embedding_precision)

    def get(self) -> Knowledge:
        with self._lock:
            if self._built is None:
                embedder = self._embedder or self._default_embedder()
                index: VectorSearch
                if self._settings.resolved_database_url.startswith("mssql"):
                    index = SqlVectorIndex(self._uow, embedder.model_name, embedder.dimension)
                else:
                    index = VectorIndex(
                        self._uow,
                        embedder.model_name,
                        embedder.dimension,
                        ann_threshold=self._settings.vector_ann_threshold,
                    )
                self._built = Knowledge(
                    embedder=embedder,
                    index=index,
                    search=SearchService(
                        self._uow,
                        embedder,
                        index,
                        BackgroundWriter(self._uow),
                        self._settings.search_gap_threshold,
                    ),
                    ingestion=Ingestion(
                        uow_factory=self._uow,
                        atoms=self._atoms,
                        blobs=self._blobs,
                        embedder=embedder,
                        tokenizer=embedder.tokenizer,
                        index=index,
                        max_document_bytes=self._settings.max_document_bytes,
                        batch_size=self._settings.embedding_batch_size,
                    ),
                )
            return self._built
