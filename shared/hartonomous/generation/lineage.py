"""Lineage: what an atom was made from (up) and what it went into (down), over typed edges.

Edges point from source to derived thing except DERIVED_FROM (derived -> source), so a walk
up follows HAS_CHUNK, USED_IN_GENERATION and GENERATED backwards and DERIVED_FROM forwards,
and a walk down the opposite. Breadth-first, one query per level and direction (the edge
indexes cover both ends), bounded in depth and in nodes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import sqlalchemy as sa

from hartonomous.generation.store import DERIVED_FROM, GENERATED, USED_IN_GENERATION
from hartonomous.knowledge.store import HAS_CHUNK
from hartonomous.store.schema import atoms, edges

FORWARD = (HAS_CHUNK, USED_IN_GENERATION, GENERATED)  # src is the source, dst derived
BACKWARD = (DERIVED_FROM,)  # src is derived, dst the source
MAX_NODES = 1000
IN_BATCH = 500

Direction = Literal["up", "down"]


@dataclass(frozen=True)
class LineageEdge:
    kind: str
    src_id: str
    dst_id: str
    ordinal: int | None
    receipt_id: str | None


class LineageRepository:
    def __init__(self, conn: sa.Connection) -> None:
        self._conn = conn

    def step(
        self, tenant_id: str, frontier: Sequence[str], direction: Direction
    ) -> list[LineageEdge]:
        """Edges one step from ``frontier`` in ``direction``."""
        found: list[LineageEdge] = []
        # up: derived -> source. FORWARD edges arrive at the frontier (dst), BACKWARD leave it.
        near, far = (
            (edges.c.dst_id, edges.c.src_id)
            if direction == "up"
            else (edges.c.src_id, edges.c.dst_id)
        )
        for i in range(0, len(frontier), IN_BATCH):
            ids = list(frontier[i : i + IN_BATCH])
            for kinds, column in ((FORWARD, near), (BACKWARD, far)):
                rows = self._conn.execute(
                    sa.select(edges.c.kind, edges.c.src_id, edges.c.dst_id, edges.c.ordinal,
                              edges.c.receipt_id)
                    .where(edges.c.tenant_id == tenant_id, edges.c.kind.in_(kinds),
                           column.in_(ids))
                    .order_by(edges.c.id)
                )  # fmt: skip
                found += [LineageEdge(r[0], r[1], r[2], r[3], r[4] or None) for r in rows]
        return found

    def describe(self, tenant_id: str, atom_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        for i in range(0, len(atom_ids), IN_BATCH):
            rows = self._conn.execute(
                sa.select(atoms).where(
                    atoms.c.tenant_id == tenant_id, atoms.c.id.in_(atom_ids[i : i + IN_BATCH])
                )
            )
            for r in rows:
                meta = r.metadata if isinstance(r.metadata, dict) else {}
                out[r.id] = {
                    "atom_id": r.id,
                    "sha256": r.sha256,
                    "media_type": r.media_type,
                    "modality": r.modality,
                    "size": r.size,
                    "kind": meta.get("kind"),
                    "filename": meta.get("filename"),
                    "created_at": r.created_at,
                }
        return out


def walk(
    repo: LineageRepository, tenant_id: str, atom_id: str, direction: Direction, depth: int
) -> dict[str, Any]:
    """Nodes (with their distance) and edges within ``depth`` steps of ``atom_id``."""
    distance = {atom_id: 0}
    seen_edges: dict[tuple[str, str, str, int | None, str | None], LineageEdge] = {}
    frontier = [atom_id]
    truncated = False
    for level in range(1, depth + 1):
        if not frontier:
            break
        step = repo.step(tenant_id, frontier, direction)
        following: list[str] = []
        for e in step:
            seen_edges.setdefault((e.kind, e.src_id, e.dst_id, e.ordinal, e.receipt_id), e)
            for node in (e.src_id, e.dst_id):
                if node not in distance:
                    if len(distance) >= MAX_NODES:
                        truncated = True
                        continue
                    distance[node] = level
                    following.append(node)
        frontier = following
    nodes = repo.describe(tenant_id, list(distance))
    return {
        "atom_id": atom_id,
        "direction": direction,
        "depth": depth,
        "nodes": [{**nodes[n], "distance": d} for n, d in distance.items() if n in nodes],
        "edges": [
            {
                "kind": e.kind,
                "src_id": e.src_id,
                "dst_id": e.dst_id,
                "ordinal": e.ordinal,
                "receipt_id": e.receipt_id,
            }
            for e in seen_edges.values()
            if e.src_id in distance and e.dst_id in distance
        ],
        "truncated": truncated,
    }
