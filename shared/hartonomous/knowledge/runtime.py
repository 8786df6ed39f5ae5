"""The knowledge services of a platform, built on first use (the model loads lazily too).

The embedder and the vector index come from factories ``bootstrap.py`` chose; this module
only wires them.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass

from hartonomous.knowledge.ingestion import Ingestion
from hartonomous.knowledge.search import SearchService
from hartonomous.ports import BlobStore, Embedder, UnitOfWork, VectorSearch
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
        embedder: Callable[[], Embedder],
        index: Callable[[Embedder], VectorSearch],
        on_indexed: Callable[[UnitOfWork, str, list[str], str], object] | None = None,
    ) -> None:
        self._settings, self._uow, self._atoms, self._blobs = settings, uow_factory, atoms, blobs
        self._embedder, self._index = embedder, index
        self._on_indexed = on_indexed
        self._built: Knowledge | None = None
        self._lock = threading.Lock()

    def get(self) -> Knowledge:
        with self._lock:
            if self._built is None:
                embedder = self._embedder()
                index = self._index(embedder)
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
                        on_indexed=self._on_indexed,
                    ),
                )
            return self._built

    def flush(self) -> None:
        """Write the queued usage and gap rows now (nothing when never built)."""
        if self._built is not None:
            self._built.search.writes.flush()

    def close(self) -> None:
        """Flush and stop the background writer (at shutdown)."""
        if self._built is not None:
            self._built.search.writes.close()
