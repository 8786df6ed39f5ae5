"""The concepts' repository: concepts, discovery runs and schedules, members, the graph.

Members are ``BELONGS_TO_CONCEPT`` edges in ``edges`` (chunk atom -> the concept's
description atom, ``weight`` = cosine distance to the centroid), so the provenance graph
holds them beside ``HAS_CHUNK``; the concepts' own graph (IS_A, RELATED, SPLIT_FROM,
MERGED_INTO) is ``concept_edges``, by stable concept id, with its evidence.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
import sqlalchemy as sa

from hartonomous.errors import Conflict
from hartonomous.generation.store import USED_IN_GENERATION
from hartonomous.knowledge.store import BELONGS_TO_CONCEPT, HAS_CHUNK
from hartonomous.store.repositories import IN_BATCH
from hartonomous.store.rows import newest_first
from hartonomous.store.schema import (
    atoms,
    chunks,
    concept_edges,
    concept_runs,
    concept_schedules,
    concepts,
    edges,
    embeddings,
)

ACTIVE, RETIRED, MERGED = "active", "retired", "merged"
FINE, BROAD = 0, 1  # concepts' levels (grouping.py)
RUNNING, COMPLETED, FAILED = "running", "completed", "failed"
BOUND_KINDS = ("IS_A", "RELATED")
STREAM_ROWS = 5000  # rows fetched at a time when reading a modality's vectors


@dataclass(frozen=True)
class ConceptRow:
    id: str
    tenant_id: str
    modality: str
    atom_id: str
    state: str
    name: str
    terms: list[str]
    size: int
    centroid: bytes
    run_id: str
    created_at: datetime
    updated_at: datetime
    level: int = FINE  # FINE: members are chunks; BROAD: a group of FINE concepts
    broader_id: str | None = None  # a FINE concept's group, when its group is a concept


@dataclass(frozen=True)
class RunRow:
    id: str
    tenant_id: str
    modality: str
    instance_id: str
    origin: str
    status: str
    k_requested: int | None
    seed: int
    summary: dict[str, Any] | None
    error: str | None
    started_at: datetime
    ended_at: datetime | None


@dataclass(frozen=True)
class Member:
    atom_id: str
    concept_id: str
    distance: float


@dataclass(frozen=True)
class GraphEdge:
    src_id: str
    kind: str
    dst_id: str
    confidence: float
    evidence: dict[str, Any]
    run_id: str


def _concept(row: Any) -> ConceptRow:
    return ConceptRow(
        row.id, row.tenant_id, row.modality, row.atom_id, row.state, row.name, list(row.terms),
        row.size, row.centroid, row.run_id, row.created_at, row.updated_at, row.level,
        row.broader_id,
    )  # fmt: skip


def _run(row: Any) -> RunRow:
    return RunRow(
        row.id, row.tenant_id, row.modality, row.instance_id, row.origin, row.status,
        row.k_requested, row.seed, row.summary, row.error, row.started_at, row.ended_at,
    )  # fmt: skip


def active_key(tenant_id: str, modality: str) -> str:
    return f"{tenant_id}:{modality}"


def _live(tenant_id: str, modality: str, level: int) -> tuple[Any, ...]:
    """The conditions of a modality's active concepts of one level."""
    return (
        concepts.c.tenant_id == tenant_id,
        concepts.c.modality == modality,
        concepts.c.state == ACTIVE,
        concepts.c.level == level,
    )


def _active_members(member: Any, tenant_id: str, modality: str, *columns: Any) -> sa.Select[Any]:
    """``columns`` over the member edges (``member``: ``edges`` or an alias of it) of the
    modality's active concepts."""
    return (
        sa.select(*columns)
        .select_from(member)
        .join(
            concepts,
            sa.and_(
                concepts.c.tenant_id == member.c.tenant_id, concepts.c.atom_id == member.c.dst_id
            ),
        )
        .where(
            member.c.tenant_id == tenant_id,
            member.c.kind == BELONGS_TO_CONCEPT,
            concepts.c.modality == modality,
            concepts.c.state == ACTIVE,
        )
    )


class ConceptRepository:
    def __init__(self, conn: sa.Connection) -> None:
        self._conn = conn

    # -- runs -------------------------------------------------------------------------------

    def start_run(self, run: RunRow) -> None:
        """Record a running discovery; 409 while another runs for the tenant and modality."""
        try:
            with self._conn.begin_nested():
                self._conn.execute(
                    concept_runs.insert().values(
                        id=run.id,
                        tenant_id=run.tenant_id,
                        modality=run.modality,
                        instance_id=run.instance_id,
                        origin=run.origin,
                        status=RUNNING,
                        active_key=active_key(run.tenant_id, run.modality),
                        k_requested=run.k_requested,
                        seed=run.seed,
                        started_at=run.started_at,
                    )
                )
        except sa.exc.IntegrityError as exc:
            running = self.running(run.tenant_id, run.modality)
            raise Conflict(
                f"a discovery of {run.modality} concepts is already running"
                + (f" (run {running.id}, instance {running.instance_id})" if running else ""),
                run_id=running.id if running else None,
                status_url=f"/v1/workflows/{running.instance_id}" if running else None,
            ) from exc

    def finish_run(
        self,
        tenant_id: str,
        run_id: str,
        status: str,
        now: datetime,
        summary: dict[str, Any] | None = None,
        error: str | None = None,
    ) -> bool:
        """End a running run (False when it had ended already: a replayed activity)."""
        done = self._conn.execute(
            concept_runs.update()
            .where(
                concept_runs.c.tenant_id == tenant_id,
                concept_runs.c.id == run_id,
                concept_runs.c.status == RUNNING,
            )
            .values(status=status, active_key=None, summary=summary, error=error, ended_at=now)
        )
        return done.rowcount == 1

    def set_summary(self, tenant_id: str, run_id: str, summary: dict[str, Any]) -> None:
        self._conn.execute(
            concept_runs.update()
            .where(concept_runs.c.tenant_id == tenant_id, concept_runs.c.id == run_id)
            .values(summary=summary)
        )

    def run(self, tenant_id: str, run_id: str) -> RunRow | None:
        row = self._conn.execute(
            concept_runs.select().where(
                concept_runs.c.tenant_id == tenant_id, concept_runs.c.id == run_id
            )
        ).first()
        return _run(row) if row else None

    def run_by_instance(self, tenant_id: str, instance_id: str) -> RunRow | None:
        row = self._conn.execute(
            concept_runs.select()
            .where(concept_runs.c.tenant_id == tenant_id, concept_runs.c.instance_id == instance_id)
            .order_by(concept_runs.c.started_at.desc())
        ).first()
        return _run(row) if row else None

    def running(self, tenant_id: str, modality: str) -> RunRow | None:
        row = self._conn.execute(
            concept_runs.select().where(
                concept_runs.c.active_key == active_key(tenant_id, modality),
                concept_runs.c.tenant_id == tenant_id,
            )
        ).first()
        return _run(row) if row else None

    def runs(self, tenant_id: str, limit: int) -> list[RunRow]:
        rows = self._conn.execute(
            concept_runs.select()
            .where(concept_runs.c.tenant_id == tenant_id)
            .order_by(concept_runs.c.started_at.desc(), concept_runs.c.id.desc())
            .limit(limit)
        )
        return [_run(r) for r in rows]

    # -- schedules --------------------------------------------------------------------------

    def set_schedule(
        self, tenant_id: str, modality: str, enabled: bool, k: int | None, now: datetime
    ) -> None:
        values = {"enabled": enabled, "k": k, "updated_at": now}
        updated = self._conn.execute(
            concept_schedules.update()
            .where(
                concept_schedules.c.tenant_id == tenant_id,
                concept_schedules.c.modality == modality,
            )
            .values(**values)
        )
        if updated.rowcount == 0:
            self._conn.execute(
                concept_schedules.insert().values(tenant_id=tenant_id, modality=modality, **values)
            )

    def schedules(self, tenant_id: str) -> list[dict[str, Any]]:
        rows = self._conn.execute(
            concept_schedules.select()
            .where(concept_schedules.c.tenant_id == tenant_id)
            .order_by(concept_schedules.c.modality)
        )
        return [{"modality": r.modality, "enabled": r.enabled, "k": r.k} for r in rows]

    def enabled_schedules(self, after: tuple[str, str] | None, limit: int) -> list[Any]:
        """(tenant_id, modality, k) of enabled schedules after ``after``, for the timer."""
        query = sa.select(
            concept_schedules.c.tenant_id, concept_schedules.c.modality, concept_schedules.c.k
        ).where(concept_schedules.c.enabled == sa.true())
        if after is not None:
            query = query.where(
                sa.or_(
                    concept_schedules.c.tenant_id > after[0],
                    sa.and_(
                        concept_schedules.c.tenant_id == after[0],
                        concept_schedules.c.modality > after[1],
                    ),
                )
            )
        order = (concept_schedules.c.tenant_id, concept_schedules.c.modality)
        return list(self._conn.execute(query.order_by(*order).limit(limit)))

    # -- what discovery reads ---------------------------------------------------------------

    def _modality_chunks(self, tenant_id: str, modality: str, model: str) -> sa.Select[Any]:
        return (
            sa.select(chunks.c.atom_id, embeddings.c.vector)
            .join(atoms, atoms.c.id == chunks.c.atom_id)
            .join(
                embeddings,
                sa.and_(
                    embeddings.c.tenant_id == chunks.c.tenant_id,
                    embeddings.c.sha256 == chunks.c.sha256,
                    embeddings.c.model == model,
                ),
            )
            .where(chunks.c.tenant_id == tenant_id, atoms.c.modality == modality)
        )

    def count_chunks(
        self, tenant_id: str, modality: str, model: str, at_most: int | None = None
    ) -> int:
        """The modality's embedded chunks, counted up to ``at_most`` (a check that there are
        enough stops there instead of joining every chunk: 0.4 s at 100k)."""
        inner = self._modality_chunks(tenant_id, modality, model)
        if at_most is not None:
            inner = inner.limit(at_most)
        query = sa.select(sa.func.count()).select_from(inner.subquery())
        return int(self._conn.execute(query).scalar_one())

    def count_all_chunks(self, tenant_id: str) -> int:
        """The tenant's chunks of every modality, by index only: an upper bound of any
        modality's, for pricing a run before it starts."""
        query = (
            sa.select(sa.func.count()).select_from(chunks).where(chunks.c.tenant_id == tenant_id)
        )
        return int(self._conn.execute(query).scalar_one())

    def vectors(
        self, tenant_id: str, modality: str, model: str, limit: int
    ) -> tuple[list[str], np.ndarray[Any, np.dtype[np.float32]]]:
        """Atom ids and their vectors (float32 rows), in chunk order, read in slices."""
        query = self._modality_chunks(tenant_id, modality, model).order_by(chunks.c.seq)
        ids: list[str] = []
        buffer = bytearray()  # one growing buffer: a list of rows joined at the end held two
        result = self._conn.execute(query.limit(limit).execution_options(yield_per=STREAM_ROWS))
        for atom_id, vector in result:
            ids.append(atom_id)
            buffer += vector
        if not ids:
            return ids, np.zeros((0, 0), dtype=np.float32)
        return ids, np.frombuffer(buffer, dtype=np.float32).reshape(len(ids), -1)

    def unassigned(
        self, tenant_id: str, modality: str, model: str, limit: int
    ) -> tuple[list[str], np.ndarray[Any, np.dtype[np.float32]]]:
        """Chunks of the modality that belong to no concept (indexed during a run)."""
        member = sa.select(edges.c.src_id).where(
            edges.c.tenant_id == tenant_id, edges.c.kind == BELONGS_TO_CONCEPT
        )
        query = (
            self._modality_chunks(tenant_id, modality, model)
            .where(chunks.c.atom_id.not_in(member))
            .order_by(chunks.c.seq)
            .limit(limit)
        )
        rows = self._conn.execute(query).all()
        if not rows:
            return [], np.zeros((0, 0), dtype=np.float32)
        vectors = np.frombuffer(b"".join(r.vector for r in rows), dtype=np.float32)
        return [r.atom_id for r in rows], vectors.reshape(len(rows), -1)

    def vectors_of(
        self, tenant_id: str, atom_ids: Sequence[str], model: str
    ) -> dict[str, tuple[str, bytes]]:
        """atom id -> (its modality, its vector) for these chunk atoms."""
        out: dict[str, tuple[str, bytes]] = {}
        for i in range(0, len(atom_ids), IN_BATCH):
            query = (
                sa.select(chunks.c.atom_id, atoms.c.modality, embeddings.c.vector)
                .join(atoms, atoms.c.id == chunks.c.atom_id)
                .join(
                    embeddings,
                    sa.and_(
                        embeddings.c.tenant_id == chunks.c.tenant_id,
                        embeddings.c.sha256 == chunks.c.sha256,
                        embeddings.c.model == model,
                    ),
                )
                .where(
                    chunks.c.tenant_id == tenant_id,
                    chunks.c.atom_id.in_(atom_ids[i : i + IN_BATCH]),
                )
            )
            for row in self._conn.execute(query):
                out[row.atom_id] = (row.modality, row.vector)
        return out

    def texts(self, tenant_id: str, atom_ids: Sequence[str]) -> dict[str, str]:
        out: dict[str, str] = {}
        for i in range(0, len(atom_ids), IN_BATCH):
            rows = self._conn.execute(
                sa.select(chunks.c.atom_id, chunks.c.text).where(
                    chunks.c.tenant_id == tenant_id,
                    chunks.c.atom_id.in_(atom_ids[i : i + IN_BATCH]),
                )
            )
            out.update({r.atom_id: r.text for r in rows})
        return out

    def memberships(self, tenant_id: str, modality: str) -> dict[str, str]:
        """atom id -> concept id, for the active concepts of the modality."""
        query = _active_members(edges, tenant_id, modality, edges.c.src_id, concepts.c.id)
        result = self._conn.execute(query.execution_options(yield_per=STREAM_ROWS))
        return {atom_id: concept_id for atom_id, concept_id in result}

    def count_members(self, tenant_id: str, modality: str) -> int:
        """Chunks that belong to an active concept of the modality."""
        query = _active_members(edges, tenant_id, modality, sa.func.count())
        return int(self._conn.execute(query).scalar_one())

    # -- concepts ---------------------------------------------------------------------------

    def active(self, tenant_id: str, modality: str, level: int = FINE) -> list[ConceptRow]:
        """The modality's active concepts of one level (FINE: those chunks belong to)."""
        rows = self._conn.execute(
            concepts.select().where(*_live(tenant_id, modality, level)).order_by(concepts.c.id)
        )
        return [_concept(r) for r in rows]

    def any_active(self, tenant_id: str) -> bool:
        """Whether the tenant has an active concept of any modality (one indexed probe)."""
        found = self._conn.execute(
            sa.select(concepts.c.id)
            .where(concepts.c.tenant_id == tenant_id, concepts.c.state == ACTIVE)
            .limit(1)
        ).first()
        return found is not None

    def all_active(self, tenant_id: str) -> list[ConceptRow]:
        """Every modality's active concepts of both levels (at most a few hundred)."""
        rows = self._conn.execute(
            concepts.select()
            .where(concepts.c.tenant_id == tenant_id, concepts.c.state == ACTIVE)
            .order_by(concepts.c.id)
        )
        return [_concept(r) for r in rows]

    def active_keys(self, tenant_id: str, modality: str) -> list[tuple[str, str | None]]:
        """(description atom, group) of the active FINE concepts, in ``active``'s order: what
        assignment caches its centroids under (a new centroid is a new atom)."""
        rows = self._conn.execute(
            sa.select(concepts.c.atom_id, concepts.c.broader_id)
            .where(*_live(tenant_id, modality, FINE))
            .order_by(concepts.c.id)
        )
        return [(r.atom_id, r.broader_id) for r in rows]

    def modality_ids(self, tenant_id: str, modality: str) -> set[str]:
        """Every concept id of the modality, of both levels, retired ones too."""
        return set(
            self._conn.execute(
                sa.select(concepts.c.id).where(
                    concepts.c.tenant_id == tenant_id, concepts.c.modality == modality
                )
            ).scalars()
        )

    def get(self, tenant_id: str, concept_id: str) -> ConceptRow | None:
        row = self._conn.execute(
            concepts.select().where(concepts.c.tenant_id == tenant_id, concepts.c.id == concept_id)
        ).first()
        return _concept(row) if row else None

    def get_many(self, tenant_id: str, ids: Sequence[str]) -> dict[str, ConceptRow]:
        out: dict[str, ConceptRow] = {}
        for i in range(0, len(ids), IN_BATCH):
            rows = self._conn.execute(
                concepts.select().where(
                    concepts.c.tenant_id == tenant_id, concepts.c.id.in_(ids[i : i + IN_BATCH])
                )
            )
            out.update({r.id: _concept(r) for r in rows})
        return out

    def page(
        self,
        tenant_id: str,
        limit: int,
        after: tuple[datetime, str] | None,
        modality: str | None,
        state: str | None,
        level: int | None = None,
    ) -> list[ConceptRow]:
        query = concepts.select().where(concepts.c.tenant_id == tenant_id)
        if modality:
            query = query.where(concepts.c.modality == modality)
        if level is not None:
            query = query.where(concepts.c.level == level)
        if state:
            query = query.where(concepts.c.state == state)
        query = newest_first(query, concepts, "created_at", after)
        return [_concept(r) for r in self._conn.execute(query.limit(limit))]

    def is_described_by(self, tenant_id: str, atom_id: str) -> str | None:
        """The concept whose current description ``atom_id`` is (None: no concept's)."""
        return self._conn.execute(
            sa.select(concepts.c.id).where(
                concepts.c.tenant_id == tenant_id, concepts.c.atom_id == atom_id
            )
        ).scalar_one_or_none()

    def narrower(self, tenant_id: str, concept_id: str) -> list[ConceptRow]:
        """The active concepts a BROAD concept groups, largest first."""
        rows = self._conn.execute(
            concepts.select()
            .where(
                concepts.c.tenant_id == tenant_id,
                concepts.c.broader_id == concept_id,
                concepts.c.state == ACTIVE,
            )
            .order_by(concepts.c.size.desc(), concepts.c.id)
        )
        return [_concept(r) for r in rows]

    def upsert(self, row: ConceptRow) -> None:
        values = {
            "modality": row.modality, "atom_id": row.atom_id, "state": row.state,
            "level": row.level, "broader_id": row.broader_id, "name": row.name,
            "terms": row.terms, "size": row.size, "centroid": row.centroid,
            "run_id": row.run_id, "updated_at": row.updated_at,
        }  # fmt: skip
        done = self._conn.execute(
            concepts.update()
            .where(concepts.c.tenant_id == row.tenant_id, concepts.c.id == row.id)
            .values(**values)
        )
        if done.rowcount == 0:
            self._conn.execute(
                concepts.insert().values(
                    id=row.id, tenant_id=row.tenant_id, created_at=row.created_at, **values
                )
            )

    def retire(self, tenant_id: str, concept_ids: Sequence[str], state: str, now: datetime) -> None:
        """Mark concepts retired or merged; they leave their group (``broader_id``), so neither
        the group's members nor a search filtered by the group reach a retired concept."""
        for i in range(0, len(concept_ids), IN_BATCH):
            self._conn.execute(
                concepts.update()
                .where(
                    concepts.c.tenant_id == tenant_id,
                    concepts.c.id.in_(concept_ids[i : i + IN_BATCH]),
                )
                .values(state=state, updated_at=now, broader_id=None)
            )

    def grow(self, tenant_id: str, sizes: dict[str, int], now: datetime) -> None:
        """Add incremental members to concepts' sizes."""
        self._conn.execute(
            concepts.update()
            .where(concepts.c.tenant_id == tenant_id, concepts.c.id == sa.bindparam("c_id"))
            .values(size=concepts.c.size + sa.bindparam("c_added"), updated_at=now),
            [{"c_id": cid, "c_added": n} for cid, n in sizes.items()],
        )

    # -- members ----------------------------------------------------------------------------

    def drop_members(self, tenant_id: str, concept_atom_ids: Sequence[str]) -> None:
        for i in range(0, len(concept_atom_ids), IN_BATCH):
            self._conn.execute(
                edges.delete().where(
                    edges.c.tenant_id == tenant_id,
                    edges.c.kind == BELONGS_TO_CONCEPT,
                    edges.c.dst_id.in_(concept_atom_ids[i : i + IN_BATCH]),
                )
            )

    def add_members(
        self, tenant_id: str, rows: Sequence[tuple[str, str, float]], now: datetime
    ) -> None:
        """(chunk atom id, concept atom id, distance) as BELONGS_TO_CONCEPT edges."""
        for i in range(0, len(rows), 10 * IN_BATCH):
            self._conn.execute(
                edges.insert(),
                [
                    {"tenant_id": tenant_id, "kind": BELONGS_TO_CONCEPT, "src_id": src,
                     "dst_id": dst, "ordinal": 0, "weight": distance, "created_at": now,
                     "receipt_id": ""}
                    for src, dst, distance in rows[i : i + 10 * IN_BATCH]
                ],
            )  # fmt: skip

    def members(
        self,
        tenant_id: str,
        concept_atom_ids: Sequence[str],
        limit: int,
        after: tuple[float, str] | None,
    ) -> list[tuple[str, float]]:
        """(atom id, distance) of the members of these concepts (a BROAD concept's are its
        narrower concepts'), nearest first, keyset-paged by (distance, atom id)."""
        query = sa.select(edges.c.src_id, edges.c.weight).where(
            edges.c.tenant_id == tenant_id,
            edges.c.kind == BELONGS_TO_CONCEPT,
            edges.c.dst_id.in_(list(concept_atom_ids)),
        )
        if after is not None:  # no row values in T-SQL: spelled out
            query = query.where(
                sa.or_(
                    edges.c.weight > after[0],
                    sa.and_(edges.c.weight == after[0], edges.c.src_id > after[1]),
                )
            )
        rows = self._conn.execute(query.order_by(edges.c.weight, edges.c.src_id).limit(limit))
        return [(r.src_id, float(r.weight)) for r in rows]

    def of_atom(self, tenant_id: str, atom_id: str) -> tuple[ConceptRow, float] | None:
        """The concept an atom belongs to, with its distance."""
        row = self._conn.execute(
            sa.select(concepts, edges.c.weight)
            .join(
                edges,
                sa.and_(
                    edges.c.tenant_id == concepts.c.tenant_id, edges.c.dst_id == concepts.c.atom_id
                ),
            )
            .where(
                edges.c.tenant_id == tenant_id,
                edges.c.src_id == atom_id,
                edges.c.kind == BELONGS_TO_CONCEPT,
            )
        ).first()
        return (_concept(row), float(row.weight)) if row else None

    # -- windows for binding ----------------------------------------------------------------

    def windows(self, tenant_id: str, modality: str) -> Iterator[tuple[str, str, str]]:
        """(window kind, window id, concept id): the concepts of each document's chunks and
        of the chunks each receipt used, for the modality's active concepts."""
        member = edges.alias("member")
        concept_of = _active_members(
            member, tenant_id, modality,
            member.c.src_id.label("atom_id"), concepts.c.id.label("concept_id"),
        ).subquery()  # fmt: skip
        for kind, edge_kind, window, atom in (
            ("document", HAS_CHUNK, edges.c.src_id, edges.c.dst_id),
            ("receipt", USED_IN_GENERATION, edges.c.receipt_id, edges.c.src_id),
        ):
            query = (
                sa.select(window, concept_of.c.concept_id)
                .distinct()
                .join(concept_of, concept_of.c.atom_id == atom)
                .where(edges.c.tenant_id == tenant_id, edges.c.kind == edge_kind)
            )
            result = self._conn.execute(query.execution_options(yield_per=STREAM_ROWS))
            for window_id, concept_id in result:
                yield kind, window_id, concept_id

    # -- the concepts' graph ----------------------------------------------------------------

    def graph_edges(
        self, tenant_id: str, kinds: Sequence[str], concept_id: str | None = None
    ) -> list[GraphEdge]:
        query = concept_edges.select().where(
            concept_edges.c.tenant_id == tenant_id, concept_edges.c.kind.in_(list(kinds))
        )
        if concept_id is not None:
            query = query.where(
                sa.or_(concept_edges.c.src_id == concept_id, concept_edges.c.dst_id == concept_id)
            )
        rows = self._conn.execute(query.order_by(concept_edges.c.id))
        return [
            GraphEdge(r.src_id, r.kind, r.dst_id, r.confidence, r.evidence, r.run_id) for r in rows
        ]

    def add_graph_edges(self, tenant_id: str, rows: Sequence[GraphEdge], now: datetime) -> None:
        if rows:
            self._conn.execute(
                concept_edges.insert(),
                [
                    {"tenant_id": tenant_id, "src_id": e.src_id, "kind": e.kind,
                     "dst_id": e.dst_id, "confidence": e.confidence, "evidence": e.evidence,
                     "run_id": e.run_id, "created_at": now}
                    for e in rows
                ],
            )  # fmt: skip

    def drop_graph_edges(self, tenant_id: str, rows: Sequence[GraphEdge]) -> None:
        for e in rows:
            self._conn.execute(
                concept_edges.delete().where(
                    concept_edges.c.tenant_id == tenant_id,
                    concept_edges.c.src_id == e.src_id,
                    concept_edges.c.kind == e.kind,
                    concept_edges.c.dst_id == e.dst_id,
                )
            )
