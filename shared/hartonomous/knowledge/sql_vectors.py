"""Vector search inside Azure SQL: ``VECTOR_DISTANCE`` (DiskANN for large tenants) through
``dbo.search_chunks_by_vector`` in sql/knowledge.sql.

The in-memory ``VectorIndex`` suits one long-lived process. A serverless Function App scales
out and starts cold: every instance would load every tenant's matrix. On Azure SQL the
search runs where the vectors are, under the row-level security policy.
"""

from __future__ import annotations

from hartonomous.knowledge.embeddings import Vectors
from hartonomous.store.unit_of_work import UnitOfWorkFactory

FILTER_OVERFETCH = 10  # filtered searches ask for this many times k, then keep the allowed


class SqlVectorIndex:
    def __init__(self, uow_factory: UnitOfWorkFactory, model: str, dimension: int) -> None:
        self._uow = uow_factory
        self.model = model
        self.dimension = dimension

    def refresh(self, tenant_id: str) -> int:
        """Nothing is cached in the process: new rows are searchable once committed."""
        return 0

    def search(
        self, tenant_id: str, query: Vectors, k: int, allowed: set[str] | None = None
    ) -> list[tuple[str, float]]:
        """The k best (atom id, cosine). A filter is applied to the k x FILTER_OVERFETCH
        nearest: a very selective filter can return fewer than k (documented)."""
        fetch = k if allowed is None else k * FILTER_OVERFETCH
        with self._uow(write=False, tenant_id=tenant_id) as uow:
            found = uow.knowledge.vector_search(tenant_id, self.model, query, fetch)
        return [(a, s) for a, s in found if allowed is None or a in allowed][:k]
