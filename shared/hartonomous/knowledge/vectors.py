"""Exact cosine search over a per-tenant matrix held in memory (the embedded default).

Vectors persist in the store (float32 bytes); each tenant's matrix is loaded on first use
and caught up incrementally by chunk ``seq``: at once after this process indexes, within a
second for rows other processes wrote. Rows are unit length, so cosine similarity is an
inner product. The matrix is held in float16 (half the memory; scores move by about 1e-3)
and scanned by usearch's SIMD kernels: ~6 ms at 100k x 384 on 2 cores. NumPy's BLAS would
be as fast alone, but its OpenBLAS threads spin after every call and starve torch's threads
embedding the next query (measured: query embedding p95 10 ms -> 100 ms). Past
``ann_threshold`` rows a tenant also gets a usearch HNSW index (approximate; unfiltered
searches use it, filtered ones stay exact over the allowed rows). bench/knowledge.py
measures its recall.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import numpy as np

from hartonomous.knowledge.embeddings import Vectors
from hartonomous.knowledge.store import SearchFilter
from hartonomous.ports import UnitOfWorkFactory
from hartonomous.ports import VectorSearch as VectorSearch  # the port, importable here too

log = logging.getLogger(__name__)


class _TenantMatrix:
    def __init__(self, dimension: int) -> None:
        self.matrix = np.zeros((0, dimension), dtype=np.float16)
        self.size = 0
        self.ids: list[str] = []
        self.positions: dict[str, int] = {}
        self.last_seq = 0
        self.checked_at = float("-inf")
        self.ann: Any = None  # usearch.index.Index once the tenant is large
        self.ann_started = False
        self.ann_ready = threading.Event()
        self.lock = threading.Lock()

    def append(self, ids: list[str], vectors: Vectors) -> None:
        needed = self.size + len(ids)
        if needed > len(self.matrix):  # grow by doubling: appends stay amortised O(1)
            grown = np.zeros((max(needed, 2 * len(self.matrix), 1024), self.matrix.shape[1]),
                             dtype=np.float16)  # fmt: skip
            grown[: self.size] = self.matrix[: self.size]
            self.matrix = grown
        self.matrix[self.size : needed] = vectors
        for i, atom_id in enumerate(ids):
            self.positions[atom_id] = self.size + i
        self.ids.extend(ids)
        if self.ann is not None:
            self.ann.add(np.arange(self.size, needed, dtype=np.uint64), vectors)
        self.size = needed

    def build_ann(self) -> None:
        """Build the HNSW graph off the lock (about a minute at 100k rows on 2 cores);
        searches stay exact meanwhile, then rows appended during the build are added."""
        from usearch.index import Index

        with self.lock:
            built, rows = self.size, self.matrix[: self.size]  # rows below size never change
        # Wider graph and search than usearch's defaults: recall over raw speed.
        ann = Index(
            ndim=self.matrix.shape[1],
            metric="cos",
            dtype="f16",
            connectivity=32,
            expansion_add=128,
            expansion_search=256,
        )
        ann.add(np.arange(built, dtype=np.uint64), rows)
        with self.lock:
            if self.size > built:
                late = np.arange(built, self.size, dtype=np.uint64)
                ann.add(late, self.matrix[built : self.size])
            self.ann = ann
        self.ann_ready.set()


class VectorIndex:
    def __init__(
        self,
        uow_factory: UnitOfWorkFactory,
        model: str,
        dimension: int,
        *,
        refresh_interval: float = 1.0,
        ann_threshold: int | None = None,
    ) -> None:
        self.ann_threshold = ann_threshold  # None: always exact
        self._uow = uow_factory
        # Writes of this process refresh at once (index_document calls refresh); other
        # processes' writes show within this many seconds, without a query per search.
        self.refresh_interval = refresh_interval
        self.model = model
        self.dimension = dimension
        self._tenants: dict[str, _TenantMatrix] = {}
        self._lock = threading.Lock()

    def _tenant(self, tenant_id: str) -> _TenantMatrix:
        with self._lock:
            if tenant_id not in self._tenants:
                self._tenants[tenant_id] = _TenantMatrix(self.dimension)
            return self._tenants[tenant_id]

    def refresh(self, tenant_id: str) -> int:
        """Load rows indexed since the last look; returns how many arrived."""
        tm = self._tenant(tenant_id)
        with tm.lock:
            added = 0
            while True:
                with self._uow(write=False, tenant_id=tenant_id) as uow:
                    rows = uow.knowledge.vectors_since(tenant_id, self.model, tm.last_seq)
                if not rows:
                    tm.checked_at = time.monotonic()
                    return added
                ids = [atom_id for _, atom_id, _ in rows]
                vectors = np.frombuffer(b"".join(v for _, _, v in rows), dtype=np.float32)
                tm.append(ids, vectors.reshape(len(rows), self.dimension))
                tm.last_seq = rows[-1][0]
                added += len(rows)
                if self._wants_ann(tm):
                    tm.ann_started = True
                    threading.Thread(
                        target=self._build_ann, args=(tenant_id, tm), name="ann-build", daemon=True
                    ).start()

    def _wants_ann(self, tm: _TenantMatrix) -> bool:
        threshold = self.ann_threshold
        return not tm.ann_started and threshold is not None and tm.size >= threshold

    @staticmethod
    def _build_ann(tenant_id: str, tm: _TenantMatrix) -> None:
        started = time.monotonic()
        try:
            tm.build_ann()
        except Exception:
            log.exception("ANN index of tenant %s failed: its searches stay exact", tenant_id)
            return
        log.info("ANN index of tenant %s: %d rows in %.1f s", tenant_id, tm.size,
                 time.monotonic() - started)  # fmt: skip

    def wait_for_ann(self, tenant_id: str, timeout: float | None = None) -> bool:
        """Whether the tenant's ANN index is serving searches (waiting up to ``timeout``)."""
        return self._tenant(tenant_id).ann_ready.wait(timeout)

    def size(self, tenant_id: str) -> int:
        return self._tenant(tenant_id).size

    def search(
        self, tenant_id: str, query: Vectors, k: int, flt: SearchFilter | None = None
    ) -> list[tuple[str, float]]:
        """The k best (atom id, cosine) of the tenant; with a filter, exact among the chunks
        it allows (looked up first: the candidates are restricted before ranking)."""
        if flt is None or flt.empty:
            return self.search_among(tenant_id, query, k, None)
        with self._uow(write=False, tenant_id=tenant_id) as uow:
            allowed = uow.knowledge.allowed_chunks(tenant_id, flt)
        return self.search_among(tenant_id, query, k, allowed)

    def search_among(
        self, tenant_id: str, query: Vectors, k: int, allowed: set[str] | None
    ) -> list[tuple[str, float]]:
        """The k best (atom id, cosine) of the tenant, among ``allowed`` atoms if given."""
        tm = self._tenant(tenant_id)
        if time.monotonic() - tm.checked_at >= self.refresh_interval:
            self.refresh(tenant_id)
        with tm.lock:
            if allowed is None and tm.ann is not None:
                found = tm.ann.search(query, count=min(k, tm.size))
                return [
                    (tm.ids[int(key)], 1.0 - float(distance))
                    for key, distance in zip(found.keys, found.distances, strict=True)
                ]
            if allowed is None:
                rows = None
                candidates = tm.matrix[: tm.size]
            else:
                rows = np.fromiter(
                    (tm.positions[a] for a in allowed if a in tm.positions), dtype=np.int64
                )
                candidates = tm.matrix[rows]
            if len(candidates) == 0:
                return []
            found = exact_search(candidates, query, min(k, len(candidates)))
            return [
                (tm.ids[int(key) if rows is None else int(rows[key])], 1.0 - float(distance))
                for key, distance in zip(found.keys, found.distances, strict=True)
            ]


def exact_search(matrix: Any, query: Vectors, count: int) -> Any:
    """Brute force inner product (1 - distance = cosine for unit rows), best first."""
    from usearch.index import search

    return search(matrix, query.astype(matrix.dtype), count, "ip", exact=True)
