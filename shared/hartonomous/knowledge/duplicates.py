"""Near-duplicate chunks (the seeds' ``sp_DetectDuplicates``): what ``mark_duplicates`` links.

Two chunks are near-duplicates at cosine >= 0.95 of their stored embeddings (identical text
is one chunk already: chunks are keyed by content). Analyze scans the tenant's newest
chunks; the action's check recomputes the cosine of each pair it is given.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from hartonomous.ports import UnitOfWorkFactory

DUPLICATE_COSINE = 0.95
BLOCK = 512  # rows compared at once: BLOCK x n float32 scores in memory


def cosine(a: bytes, b: bytes) -> float:
    """Of two stored unit vectors (float32 bytes)."""
    return float(np.dot(np.frombuffer(a, np.float32), np.frombuffer(b, np.float32)))


def find_near_duplicates(
    uow_factory: UnitOfWorkFactory,
    tenant_id: str,
    model: str,
    limit_chunks: int = 2000,
    threshold: float = DUPLICATE_COSINE,
) -> list[tuple[str, str, float]]:
    """(duplicate, canonical, cosine) among the tenant's newest ``limit_chunks`` chunks, the
    canonical being the older chunk, closest first. Each duplicate is paired once, with its
    closest older chunk; chunks already linked as a duplicate are left out."""
    with uow_factory(write=False, tenant_id=tenant_id) as uow:
        rows = uow.associations.recent_chunk_vectors(tenant_id, model, limit_chunks)
    if len(rows) < 2:
        return []
    rows.sort()  # oldest first, by indexing order
    ids = [atom_id for _, atom_id, _ in rows]
    matrix = np.frombuffer(b"".join(v for _, _, v in rows), np.float32).reshape(len(rows), -1)
    found: dict[str, tuple[str, float]] = {}
    for start in range(0, len(rows), BLOCK):
        block = matrix[start : start + BLOCK] @ matrix.T  # (block, n)
        for offset, scores in enumerate(block):
            i = start + offset
            older = scores[:i]  # only older chunks can be this one's canonical
            if not len(older):
                continue
            j = int(np.argmax(older))
            if older[j] >= threshold:
                found[ids[i]] = (ids[j], float(older[j]))
    if not found:
        return []
    with uow_factory(write=False, tenant_id=tenant_id) as uow:
        linked = uow.associations.duplicate_links(tenant_id, list(found))
    pairs = [(dup, canon, score) for dup, (canon, score) in found.items()]
    return _unlinked(pairs, linked)


def _unlinked(
    pairs: Sequence[tuple[str, str, float]], linked: set[tuple[str, str]]
) -> list[tuple[str, str, float]]:
    marked = {duplicate for duplicate, _ in linked}  # already some canonical's duplicate
    out = [(d, c, s) for d, c, s in pairs if d not in marked and (c, d) not in linked]
    out.sort(key=lambda p: (-p[2], p[0]))
    return out
