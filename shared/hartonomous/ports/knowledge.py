"""Embeddings, keyword and vector search (``knowledge/``, the GPU worker's embedder)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    import sqlalchemy as sa

    from hartonomous.knowledge.chunking import Tokenizer
    from hartonomous.knowledge.embeddings import Vectors
    from hartonomous.knowledge.store import ChunkHit, SearchFilter


class Embedder(Protocol):
    """Text to vectors: MiniLM in process, or the GPU worker over HTTP."""

    model_name: str
    dimension: int

    @property
    def tokenizer(self) -> Tokenizer:
        """The model's own tokenizer: chunks are cut to its window."""
        ...

    def embed(self, texts: Sequence[str], *, spare_core: bool = False) -> Vectors:
        """(len(texts), dimension) float32, each row of unit length. ``spare_core``: the
        caller runs other work meanwhile (hybrid search's keyword query); leave it a core."""
        ...


class KeywordIndex(Protocol):
    """Ranked keyword search over chunk text, kept beside the chunk rows in the same
    transaction: SQLite FTS5 (``knowledge/keyword_sqlite.py``), the Azure SQL full-text
    index (``knowledge/keyword_mssql.py``)."""

    def add(self, conn: sa.Connection, tenant_id: str, rows: Sequence[tuple[str, str]]) -> None:
        """Index ``(atom_id, text)`` rows of new chunks."""

    def remove(self, conn: sa.Connection, tenant_id: str, atom_id: str) -> None:
        """Forget a chunk that is being deleted."""

    def search(
        self,
        conn: sa.Connection,
        tenant_id: str,
        words: Sequence[str],
        limit: int,
        allowed: sa.Select[Any] | None = None,
    ) -> list[ChunkHit]:
        """The best ``limit`` chunks matching any word, best first (positive scores);
        ``allowed`` (a subquery of chunk atom ids) restricts them inside the query."""
        ...


class VectorSearch(Protocol):
    """Nearest chunks by cosine: in memory (``knowledge/vectors.py``), in Azure SQL
    (``knowledge/sql_vectors.py``)."""

    def refresh(self, tenant_id: str) -> int:
        """Catch up with rows indexed since the last look; how many arrived."""
        ...

    def search(
        self, tenant_id: str, query: Vectors, k: int, flt: SearchFilter | None = None
    ) -> list[tuple[str, float]]:
        """The k best (atom id, cosine) of the tenant; with a filter, the k best of the
        chunks it allows (never a filtered tenant-wide top k)."""
        ...
