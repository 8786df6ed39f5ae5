"""Discovery and binding: the work of the ``concepts_discover`` orchestration's activities.

``cluster`` reads the modality's chunk vectors, clusters them, names the clusters, groups
them into broad concepts (grouping.py), matches both levels to the live concepts, and writes
in one transaction: the description atoms, the concept rows, the members' edges (the
previous run's removed), the lineage, and the chunks indexed while it ran. ``bind`` rewrites
the IS_A and RELATED edges from co-occurrence, touching only what changed. Both are
idempotent for a run: a replayed activity answers what the run recorded.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np

from hartonomous.concepts import binding, clustering, grouping, identity, naming
from hartonomous.concepts.assignment import ConceptAssigner
from hartonomous.concepts.store import (
    ACTIVE,
    BOUND_KINDS,
    BROAD,
    COMPLETED,
    FINE,
    MERGED,
    RETIRED,
    RUNNING,
    ConceptRow,
    GraphEdge,
)
from hartonomous.domain.atoms import CONCEPT_MEDIA_TYPE
from hartonomous.errors import NotFound, UnprocessableContent
from hartonomous.metering.ledger import Usage
from hartonomous.ports import UnitOfWork, UnitOfWorkFactory
from hartonomous.services.atoms import AtomService
from hartonomous.services.clock import new_id, utcnow

K_MAX = 256
CENTROID_DECIMALS = 6  # in the description atom: equal centroids give equal bytes


@dataclass(frozen=True)
class RunRef:
    """The input of every activity of a discovery."""

    tenant_id: str
    run_id: str

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RunRef:
        return cls(str(data["tenant_id"]), str(data["run_id"]))


@dataclass(frozen=True)
class Clustered:
    chunks: int
    k: int
    k_chosen_by: str  # given | silhouette
    silhouette: dict[str, float]
    kept: int
    created: int
    retired: int
    splits: int
    merges: int
    caught_up: int  # chunks indexed during the run, assigned as it wrote
    timings_ms: dict[str, float] = field(default_factory=dict)
    start: str = "cold"  # warm: refined from the live concepts (clustering.warm_or_cold)
    broad: int = 0  # broad concepts (groups of two concepts or more, grouping.py)
    broad_kept: int = 0  # of them, ids carried over from the previous run

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Bound:
    windows: int
    is_a: int
    related: int
    added: int
    removed: int

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def needed_chunks(k: int | None) -> int:
    """How many chunks a discovery with ``k`` (None: chosen) needs."""
    return max(2, k or 2) * clustering.MIN_PER_CONCEPT


@dataclass(frozen=True)
class Level:
    """One level of a run's concepts, in cluster (or group) order, with their ids."""

    names: list[str]
    terms: list[list[str]]
    sizes: list[int]
    centroids: clustering.Matrix
    matched: identity.Identities
    broader: list[int] = field(default_factory=list)  # FINE: each one's BROAD index, or -1


def description(concept_id: str, modality: str, name: str, terms: list[str], size: int,
                centroid: np.ndarray[Any, Any], level: int = FINE) -> bytes:  # fmt: skip
    """The description atom's bytes: canonical JSON (sorted keys, no spaces)."""
    body = {
        "concept_id": concept_id,
        "modality": modality,
        "level": level,
        "name": name,
        "top_terms": terms,
        "size": size,
        "centroid": [round(float(v), CENTROID_DECIMALS) for v in centroid],
    }
    return json.dumps(body, sort_keys=True, separators=(",", ":")).encode()


def _match(
    old: list[ConceptRow],
    centroids: clustering.Matrix,
    old_members: dict[str, str],
    new_members: dict[str, int],
) -> identity.Identities:
    """Ids for one level's new concepts from the live ones of that level."""
    previous = (
        clustering.normalized(np.stack([np.frombuffer(c.centroid, np.float32) for c in old]))
        if old else np.zeros((0, centroids.shape[1]), np.float32)
    )  # fmt: skip
    return identity.match([c.id for c in old], previous, centroids, old_members, new_members,
                          new_id)  # fmt: skip


class ConceptDiscovery:
    def __init__(
        self,
        uow_factory: UnitOfWorkFactory,
        atoms: AtomService,
        assigner: ConceptAssigner,
        model: Callable[[], str],
        max_chunks: int,
    ) -> None:
        self._uow, self._atoms, self._assigner = uow_factory, atoms, assigner
        self._model, self._max_chunks = model, max_chunks

    # -- cluster ----------------------------------------------------------------------------

    def cluster(self, ref: RunRef) -> Clustered:
        started = time.perf_counter()
        timings: dict[str, float] = {}

        def lap(name: str) -> None:
            timings[name] = round((time.perf_counter() - started) * 1000 - sum(timings.values()), 1)

        model = self._model()
        with self._uow(write=False, tenant_id=ref.tenant_id) as uow:
            run = uow.concepts.run(ref.tenant_id, ref.run_id)
            if run is None:
                raise NotFound(f"no discovery run {ref.run_id!r}")
            if run.summary and "clustered" in run.summary:  # a replayed activity
                return Clustered(**run.summary["clustered"])
            ids, raw = uow.concepts.vectors(ref.tenant_id, run.modality, model, self._max_chunks)
            old = uow.concepts.active(ref.tenant_id, run.modality)
            old_broad = uow.concepts.active(ref.tenant_id, run.modality, BROAD)
            old_members = uow.concepts.memberships(ref.tenant_id, run.modality)
        lap("read")
        need = needed_chunks(run.k_requested)
        if len(ids) < need:
            raise UnprocessableContent(
                f"{need} chunks of modality {run.modality!r} are needed to find "
                f"{run.k_requested or 2} concepts; the tenant has {len(ids)}",
                needed=need, found=len(ids),
            )  # fmt: skip
        x = clustering.normalized(raw)
        del raw  # the rows as read: only the normalised copy is needed from here
        scores: dict[int, float] = {}
        if run.k_requested:
            k, chosen_by = min(run.k_requested, len(ids)), "given"
        else:
            k, scores = clustering.choose_k(x, K_MAX, seed=run.seed)
            chosen_by = "silhouette"
        lap("choose_k")
        start = "cold"
        if old:  # a re-run starts from the live concepts, largest first
            largest = sorted(old, key=lambda c: -c.size)
            previous = clustering.normalized(
                np.stack([np.frombuffer(c.centroid, np.float32) for c in largest])
            )
            found, start = clustering.warm_or_cold(x, k, previous, seed=run.seed)
        else:
            found = clustering.spherical_kmeans(x, k, seed=run.seed)
        lap("cluster")
        members = [self._central(found.labels == j, found.similarity) for j in range(k)]
        terms = self._terms(ref.tenant_id, ids, members)
        lap("name")
        new_members = dict(zip(ids, found.labels.tolist(), strict=True))
        sizes = np.bincount(found.labels, minlength=k).tolist()
        names = [naming.name_of(terms[j], f"concept {j + 1}") for j in range(k)]
        fine = Level(names, terms, sizes, found.centroids,
                     _match(old, found.centroids, old_members, new_members))  # fmt: skip
        fine, broad = self._group(ref.tenant_id, ids, x, found, fine, old, old_broad, old_members)
        lap("group")
        staged = self._atoms.stage_many(
            [
                description(level.matched.ids[j], run.modality, level.names[j], level.terms[j],
                            level.sizes[j], level.centroids[j], number)
                for number, level in ((FINE, fine), (BROAD, broad))
                for j in range(len(level.names))
            ]
        )  # fmt: skip
        lap("stage")
        try:
            caught_up = self._write(ref, run.modality, old + old_broad, found, fine, broad,
                                    staged, ids, model)  # fmt: skip
        finally:
            for blob in staged:
                blob.discard()
        lap("write")
        lineage = fine.matched.lineage
        merges = sum(1 for line in lineage if line.kind == identity.MERGED_INTO)
        result = Clustered(
            chunks=len(ids), k=k, k_chosen_by=chosen_by,
            silhouette={str(c): round(s, 4) for c, s in scores.items()},
            kept=len(fine.matched.kept), created=k - len(fine.matched.kept),
            retired=len(fine.matched.retired), splits=len(lineage) - merges, merges=merges,
            caught_up=caught_up, timings_ms=timings, start=start,
            broad=len(broad.names), broad_kept=len(broad.matched.kept),
        )  # fmt: skip
        with self._uow(write=True, tenant_id=ref.tenant_id) as uow:
            uow.concepts.set_summary(ref.tenant_id, ref.run_id, {"clustered": result.to_json()})
            uow.commit()
        return result

    @staticmethod
    def _central(rows_in: np.ndarray[Any, Any], similarity: np.ndarray[Any, Any]) -> list[int]:
        """The rows (where ``rows_in``) most similar to their centre, for naming."""
        rows = np.flatnonzero(rows_in)
        best = rows[np.argsort(-similarity[rows], kind="stable")[: naming.NAMING_MEMBERS]]
        return [int(i) for i in best]

    def _group(
        self,
        tenant_id: str,
        ids: list[str],
        x: clustering.Matrix,
        found: clustering.Clustering,
        fine: Level,
        old: list[ConceptRow],
        old_broad: list[ConceptRow],
        old_members: dict[str, str],
    ) -> tuple[Level, Level]:
        """The broad level: groups of the fine concepts (grouping.py), named by c-TF-IDF over
        the chunks nearest each group's centre, matched to the live broad concepts like the
        fine ones; returns the fine level with each one's group, and the broad level."""
        k = len(fine.names)
        groups = grouping.group_count(k)
        if not groups:
            empty = np.zeros((0, x.shape[1]), np.float32)
            none = Level([], [], [], empty, _match(old_broad, empty, {}, {}))
            return replace(fine, broader=[-1] * k), none
        of_fine = grouping.group(fine.centroids, fine.sizes, fine.names, groups)
        chunk_group = of_fine[found.labels]
        centres, similarity = grouping.chunk_centres(x, chunk_group, groups)
        # Named over every group, those of one concept too: the same c-TF-IDF classes as
        # the partition's, so a group's name does not depend on which groups become concepts.
        terms = self._terms(
            tenant_id, ids, [self._central(chunk_group == g, similarity) for g in range(groups)]
        )
        children = np.bincount(of_fine, minlength=groups)
        kept = [g for g in range(groups) if children[g] >= grouping.MIN_CHILDREN]
        index = {g: i for i, g in enumerate(kept)}
        broader = [index.get(int(g), -1) for g in of_fine]
        sizes = [0] * len(kept)
        for j, b in enumerate(broader):
            if b >= 0:
                sizes[b] += fine.sizes[j]
        live = {c.id for c in old_broad}
        old_of = {c.id: c.broader_id for c in old if c.broader_id in live}
        before = {a: old_of[c] for a, c in old_members.items() if c in old_of}
        labels = found.labels.tolist()
        after = {a: broader[labels[i]] for i, a in enumerate(ids) if broader[labels[i]] >= 0}
        names = [naming.name_of(terms[g], f"broad concept {i + 1}") for i, g in enumerate(kept)]
        broad = Level(names, [terms[g] for g in kept], sizes, centres[kept],
                      _match(old_broad, centres[kept], before, after))  # fmt: skip
        return replace(fine, broader=broader), broad

    def _terms(self, tenant_id: str, ids: list[str], central: list[list[int]]) -> list[list[str]]:
        """c-TF-IDF over each class's rows (its members nearest its centre)."""
        with self._uow(write=False, tenant_id=tenant_id) as uow:
            texts = uow.concepts.texts(tenant_id, [ids[i] for rows in central for i in rows])
        return naming.top_terms([[texts.get(ids[i], "") for i in rows] for rows in central])

    def _write(
        self,
        ref: RunRef,
        modality: str,
        old: list[ConceptRow],
        found: clustering.Clustering,
        fine: Level,
        broad: Level,
        staged: list[Any],
        ids: list[str],
        model: str,
    ) -> int:
        now = utcnow()
        concept_ids = fine.matched.ids + broad.matched.ids
        with self._uow(write=True, tenant_id=ref.tenant_id) as uow:
            run = uow.concepts.run(ref.tenant_id, ref.run_id)
            if run is None or run.status != RUNNING:
                raise UnprocessableContent(f"discovery run {ref.run_id!r} is no longer running")
            recorded = self._atoms.record_many_in(
                uow,
                ref.tenant_id,
                [(blob, CONCEPT_MEDIA_TYPE, {"kind": "concept", "concept_id": concept_ids[j]})
                 for j, blob in enumerate(staged)],
            )  # fmt: skip
            atom_ids = [r.atom.id for r in recorded]
            before = {c.id: c for c in old}
            uow.concepts.drop_members(ref.tenant_id, [c.atom_id for c in old])
            # Broad first: a fine concept's row names its group's.
            for offset, number, level in ((len(fine.names), BROAD, broad), (0, FINE, fine)):
                for j, concept_id in enumerate(level.matched.ids):
                    previous = before.get(concept_id)
                    group = level.broader[j] if level.broader else -1
                    uow.concepts.upsert(
                        ConceptRow(
                            id=concept_id, tenant_id=ref.tenant_id, modality=modality,
                            atom_id=atom_ids[offset + j], state=ACTIVE, name=level.names[j],
                            terms=level.terms[j], size=level.sizes[j],
                            centroid=level.centroids[j].astype(np.float32).tobytes(),
                            run_id=ref.run_id,
                            created_at=previous.created_at if previous else now,
                            updated_at=now, level=number,
                            broader_id=broad.matched.ids[group] if group >= 0 else None,
                        )
                    )  # fmt: skip
            self._drop_superseded(uow, ref.tenant_id, old, concept_ids, atom_ids)
            lineage = fine.matched.lineage + broad.matched.lineage
            retired = fine.matched.retired + broad.matched.retired
            merged = {line.src_id for line in lineage if line.kind == identity.MERGED_INTO}
            uow.concepts.retire(ref.tenant_id, [c for c in retired if c in merged], MERGED, now)
            uow.concepts.retire(ref.tenant_id, [c for c in retired if c not in merged], RETIRED,
                                now)  # fmt: skip
            distances = (1.0 - found.similarity).tolist()
            labels = found.labels.tolist()
            uow.concepts.add_members(
                ref.tenant_id,
                [(atom_id, atom_ids[labels[i]], distances[i]) for i, atom_id in enumerate(ids)],
                now,
            )
            uow.concepts.add_graph_edges(
                ref.tenant_id,
                [GraphEdge(line.src_id, line.kind, line.dst_id, round(line.share, 6),
                           {"member_share": round(line.share, 6)}, ref.run_id)
                 for line in lineage],
                now,
            )  # fmt: skip
            late_ids, late = uow.concepts.unassigned(ref.tenant_id, modality, model, 100_000)
            caught_up = len(
                self._assigner.assign_matrix_in(uow, ref.tenant_id, modality, late_ids, late)
            )
            uow.usage.record(
                ref.tenant_id, f"concepts:{ref.run_id}",
                [Usage("concepts.chunks", len(ids), "chunks")], now,
            )  # fmt: skip
            uow.commit()
        return caught_up

    @staticmethod
    def _drop_superseded(
        uow: UnitOfWork, tenant_id: str, old: list[ConceptRow], ids: list[str],
        atom_ids: list[str],
    ) -> None:  # fmt: skip
        """The previous descriptions of the concepts this run describes anew: their members'
        edges went with ``drop_members``, so the atoms go too (a retired concept keeps its
        last one). Without this an hourly discovery piled up k atoms an hour."""
        now_described = dict(zip(ids, atom_ids, strict=True))
        for concept in old:
            new = now_described.get(concept.id)
            if new is None or new == concept.atom_id:
                continue
            atom = uow.atoms.get(tenant_id, concept.atom_id)
            if atom is None:
                continue
            uow.knowledge.forget_atom(tenant_id, atom.id)
            uow.atoms.delete(tenant_id, atom.id)
            uow.blobs.release(atom.sha256)

    # -- bind -------------------------------------------------------------------------------

    def bind(self, ref: RunRef) -> Bound:
        """IS_A and RELATED edges among the modality's active concepts from co-occurrence;
        an edge whose confidence and evidence did not change is not written again."""
        with self._uow(write=False, tenant_id=ref.tenant_id) as uow:
            run = uow.concepts.run(ref.tenant_id, ref.run_id)
            if run is None:
                raise NotFound(f"no discovery run {ref.run_id!r}")
            if run.summary and "bound" in run.summary:
                return Bound(**run.summary["bound"])
            groups: dict[tuple[str, str], set[str]] = {}
            for kind, window_id, concept_id in uow.concepts.windows(ref.tenant_id, run.modality):
                groups.setdefault((kind, window_id), set()).add(concept_id)
            fine = uow.concepts.active(ref.tenant_id, run.modality)
            broad = uow.concepts.active(ref.tenant_id, run.modality, BROAD)
        centroids = {c.id: np.frombuffer(c.centroid, np.float32) for c in fine + broad}
        live = {c.id for c in broad}
        broader = {c.id: c.broader_id for c in fine if c.broader_id in live}
        windows = [binding.Window(kind, frozenset(c)) for (kind, _), c in sorted(groups.items())]
        wanted = {
            (b.src_id, b.kind, b.dst_id): b for b in binding.bind(windows, centroids, broader)
        }
        now = utcnow()
        with self._uow(write=True, tenant_id=ref.tenant_id) as uow:
            modality_ids = uow.concepts.modality_ids(ref.tenant_id, run.modality)
            existing = [
                e for e in uow.concepts.graph_edges(ref.tenant_id, BOUND_KINDS)
                if e.src_id in modality_ids or e.dst_id in modality_ids
            ]  # fmt: skip
            have = {(e.src_id, e.kind, e.dst_id): e for e in existing}
            stale = [
                e for key, e in have.items()
                if key not in wanted or (wanted[key].confidence, wanted[key].evidence)
                != (e.confidence, e.evidence)
            ]  # fmt: skip
            fresh = [
                GraphEdge(b.src_id, b.kind, b.dst_id, b.confidence, b.evidence, ref.run_id)
                for key, b in wanted.items()
                if key not in have or have[key] in stale
            ]
            uow.concepts.drop_graph_edges(ref.tenant_id, stale)
            uow.concepts.add_graph_edges(ref.tenant_id, fresh, now)
            result = Bound(
                windows=len(windows),
                is_a=sum(1 for b in wanted.values() if b.kind == binding.IS_A),
                related=sum(1 for b in wanted.values() if b.kind == binding.RELATED),
                added=len(fresh),
                removed=len(stale),
            )
            summary = dict(run.summary or {})
            summary["bound"] = result.to_json()
            uow.concepts.set_summary(ref.tenant_id, ref.run_id, summary)
            uow.commit()
        return result

    # -- the end ----------------------------------------------------------------------------

    def finish(self, ref: RunRef, error: str | None) -> dict[str, Any]:
        """Mark the run completed (or failed with ``error``); returns its summary."""
        with self._uow(write=True, tenant_id=ref.tenant_id) as uow:
            run = uow.concepts.run(ref.tenant_id, ref.run_id)
            if run is None:
                raise NotFound(f"no discovery run {ref.run_id!r}")
            status = COMPLETED if error is None else "failed"
            uow.concepts.finish_run(ref.tenant_id, ref.run_id, status, utcnow(), run.summary,
                                    error[:2000] if error else None)  # fmt: skip
            uow.commit()
        return {"run_id": ref.run_id, "status": status, **(run.summary or {})}
