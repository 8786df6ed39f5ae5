"""Incremental assignment: a chunk indexed after a discovery joins its nearest concept.

Ingestion calls ``assign_in`` inside the transaction that indexes the chunks, so a chunk is
never searchable without its concept once its modality has concepts. Centroids are cached per
tenant and modality under the ids of the concepts' description atoms and their groups: a
description's content holds its centroid, so any change of centroid changes an atom id and
misses the cache. A chunk's broad concept (its concept's group) grows with it.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np

from hartonomous.concepts.clustering import Matrix, assign, normalized
from hartonomous.concepts.store import ConceptRow
from hartonomous.ports import UnitOfWork
from hartonomous.services.clock import utcnow

_CACHE_ENTRIES = 256  # (tenant, modality) pairs


class _Centroids:
    def __init__(self, rows: Sequence[ConceptRow]) -> None:
        self.ids = [r.id for r in rows]
        self.atom_ids = [r.atom_id for r in rows]
        self.broader = {r.id: r.broader_id for r in rows if r.broader_id}
        self.keys = [(r.atom_id, r.broader_id) for r in rows]
        self.matrix: Matrix = normalized(
            np.stack([np.frombuffer(r.centroid, dtype=np.float32) for r in rows])
        )


class ConceptAssigner:
    def __init__(self) -> None:
        self._cache: dict[tuple[str, str], tuple[tuple[Any, ...], _Centroids]] = {}
        self._lock = threading.Lock()

    def assign_in(
        self, uow: UnitOfWork, tenant_id: str, atom_ids: Sequence[str], model: str
    ) -> dict[str, str]:
        """Give each chunk atom its nearest active concept of its own modality; returns atom
        id -> concept id for those assigned. For chunks that belong to none yet (ingestion
        passes only the chunks it created): a member's second edge breaks the edges' key."""
        if not atom_ids or not uow.concepts.any_active(tenant_id):
            return {}  # most tenants, most of the time: no vectors read for nothing
        found = uow.concepts.vectors_of(tenant_id, atom_ids, model)
        by_modality: dict[str, list[tuple[str, bytes]]] = {}
        for atom_id, (modality, vector) in found.items():
            by_modality.setdefault(modality, []).append((atom_id, vector))
        out: dict[str, str] = {}
        now = utcnow()
        for modality, items in by_modality.items():
            centroids = self._centroids(uow, tenant_id, modality)
            if centroids is None:
                continue
            x = normalized(
                np.frombuffer(b"".join(v for _, v in items), dtype=np.float32).reshape(
                    len(items), -1
                )
            )
            out.update(self.place(uow, tenant_id, [a for a, _ in items], x, centroids, now))
        return out

    def assign_matrix_in(
        self, uow: UnitOfWork, tenant_id: str, modality: str, atom_ids: list[str], x: Any
    ) -> dict[str, str]:
        """``assign_in`` for vectors already read (discovery's catch-up)."""
        centroids = self._centroids(uow, tenant_id, modality)
        if centroids is None or not atom_ids:
            return {}
        return self.place(uow, tenant_id, atom_ids, normalized(x), centroids, utcnow())

    @staticmethod
    def place(
        uow: UnitOfWork,
        tenant_id: str,
        atom_ids: list[str],
        x: Matrix,
        centroids: _Centroids,
        now: Any,
    ) -> dict[str, str]:
        labels, sims = assign(x, centroids.matrix)
        rows = [
            (atom_id, centroids.atom_ids[label], float(1.0 - sim))
            for atom_id, label, sim in zip(atom_ids, labels.tolist(), sims.tolist(), strict=True)
        ]
        uow.concepts.add_members(tenant_id, rows, now)
        sizes = Counter(centroids.ids[label] for label in labels.tolist())
        for concept_id, n in list(sizes.items()):  # a broad concept counts its groups' members
            if concept_id in centroids.broader:
                sizes[centroids.broader[concept_id]] += n
        uow.concepts.grow(tenant_id, dict(sizes), now)
        return {a: centroids.ids[label] for a, label in zip(atom_ids, labels.tolist(), strict=True)}

    def _centroids(self, uow: UnitOfWork, tenant_id: str, modality: str) -> _Centroids | None:
        version = tuple(uow.concepts.active_keys(tenant_id, modality))
        if not version:
            return None
        key = (tenant_id, modality)
        with self._lock:
            cached = self._cache.get(key)
        if cached is not None and cached[0] == version:
            return cached[1]
        built = _Centroids(uow.concepts.active(tenant_id, modality))
        with self._lock:
            if len(self._cache) >= _CACHE_ENTRIES:
                self._cache.pop(next(iter(self._cache)))
            self._cache[key] = (tuple(built.keys), built)
        return built
