"""Vector search inside Azure SQL, where the vectors are (the Azure world's ``VectorSearch``).

The in-memory ``VectorIndex`` suits one long-lived process. A serverless Function App scales
out and starts cold: every instance would load every tenant's matrix. On Azure SQL the
search runs under the row-level security policy, in one statement per search:

- unfiltered: ``dbo.search_chunks_by_vector`` (sql/knowledge.sql) ranks exactly with
  ``VECTOR_DISTANCE`` while the tenant has fewer than ``exact_below`` vectors of the model,
  and above that asks ``VECTOR_SEARCH`` over the DiskANN index (approximate, the tenant and
  model filtered during the search);
- filtered: exact ``VECTOR_DISTANCE`` over the filter's chunks only (the filter's subquery
  inside the statement), as the in-memory index stays exact over allowed rows.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import sqlalchemy as sa

from hartonomous.knowledge.embeddings import Vectors
from hartonomous.knowledge.store import SearchFilter, allowed_chunks_query
from hartonomous.ports import UnitOfWorkFactory
from hartonomous.store.schema import Vector, chunks, embeddings

PROCEDURE = "EXEC dbo.search_chunks_by_vector ?, ?, ?, ?, ?"


def vector_json(vector: Any) -> str:
    """A vector as Azure SQL's VECTOR literal: a JSON array of floats."""
    return json.dumps([float(x) for x in vector])


def filtered_statement(
    tenant_id: str, model: str, query: Vectors, k: int, allowed: sa.Select[Any]
) -> sa.Select[Any]:
    """Exact cosine over the allowed chunks only, best first."""
    dimension = len(query)
    probe = sa.cast(
        sa.bindparam("query", np.asarray(query, dtype=np.float32).tobytes(), Vector(dimension)),
        Vector(dimension),
    )
    # The metric is written in the statement, as the documentation shows it, never bound.
    distance = sa.func.VECTOR_DISTANCE(sa.literal_column("'cosine'"), embeddings.c.vector, probe)
    return (
        sa.select(chunks.c.atom_id, (1.0 - distance).label("score"))
        .join_from(
            embeddings,
            chunks,
            sa.and_(
                chunks.c.tenant_id == embeddings.c.tenant_id, chunks.c.sha256 == embeddings.c.sha256
            ),
        )
        .where(
            embeddings.c.tenant_id == tenant_id,
            embeddings.c.model == model,
            chunks.c.atom_id.in_(allowed),
        )
        .order_by(distance)
        .limit(k)
    )


class SqlVectorIndex:
    def __init__(
        self, uow_factory: UnitOfWorkFactory, model: str, dimension: int, exact_below: int
    ) -> None:
        self._uow = uow_factory
        self.model = model
        self.dimension = dimension
        self.exact_below = exact_below  # tenants with fewer vectors are searched exactly

    def refresh(self, tenant_id: str) -> int:
        """Nothing is cached in the process: new rows are searchable once committed."""
        return 0

    def search(
        self, tenant_id: str, query: Vectors, k: int, flt: SearchFilter | None = None
    ) -> list[tuple[str, float]]:
        """The k best (atom id, cosine); with a filter, the k best among its chunks."""

        def nearest(conn: sa.Connection) -> list[tuple[str, float]]:
            if flt is None or flt.empty:
                args = (tenant_id, vector_json(query), self.model, k, self.exact_below)
                rows = conn.exec_driver_sql(PROCEDURE, args)
            else:
                allowed = allowed_chunks_query(tenant_id, flt)
                rows = conn.execute(filtered_statement(tenant_id, self.model, query, k, allowed))
            return [(r[0], float(r[1])) for r in rows]

        with self._uow(write=False, tenant_id=tenant_id) as uow:
            return uow.knowledge.within(nearest)
