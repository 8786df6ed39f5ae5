"""``mark_duplicates``: link near-duplicate chunks ``DUPLICATE_OF`` their canonical chunk.

The platform re-checks what the planner claims: every id must be a chunk of the tenant and
every pair's stored embeddings must have cosine >= 0.95. Search then shows one chunk of each
group (``knowledge/search.py``). Measure: the share of result slots, over probe queries,
not taken by a near-duplicate of a better-ranked result.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from hartonomous.autonomy.actions.base import ActionContext, ActionExecutor, Measurement
from hartonomous.autonomy.actions.learn_association import request_key, search_cost
from hartonomous.autonomy.registry import REGISTRY
from hartonomous.errors import NotFound, UnprocessableContent
from hartonomous.knowledge.duplicates import DUPLICATE_COSINE, cosine
from hartonomous.knowledge.search import Mode, SearchService
from hartonomous.ports import Embedder, UnitOfWorkFactory
from hartonomous.services.clock import utcnow

PROBE_CHARS = 200  # of each duplicate's text, as a probe query
MAX_PROBES = 20


def _pairs(ctx: ActionContext) -> list[tuple[str, str]]:
    return [(str(p["duplicate_id"]), str(p["canonical_id"])) for p in ctx.parameters["pairs"]]


@dataclass
class MarkDuplicates(ActionExecutor):
    uow_factory: UnitOfWorkFactory
    search: Callable[[], SearchService]
    embedder: Callable[[], Embedder]
    spec = REGISTRY["mark_duplicates"]

    def check(self, ctx: ActionContext) -> None:
        pairs = _pairs(ctx)
        ids = {i for pair in pairs for i in pair}
        with self.uow_factory(write=False, tenant_id=ctx.tenant_id) as uow:
            stored = uow.associations.chunk_vectors(ctx.tenant_id, ids, self.embedder().model_name)
            chunks = uow.associations.chunk_ids(ctx.tenant_id, ids)
        missing = sorted(ids - chunks)
        if missing:  # another tenant's chunk is not found either
            raise NotFound(f"no chunk atom {missing[0]!r}", atom_ids=missing[:10])
        for duplicate, canonical in pairs:
            if duplicate == canonical:
                raise UnprocessableContent(f"chunk {duplicate!r} cannot duplicate itself")
            if duplicate not in stored or canonical not in stored:
                raise UnprocessableContent(f"{duplicate!r} or {canonical!r} has no embedding")
            score = cosine(stored[duplicate][1], stored[canonical][1])
            if score < DUPLICATE_COSINE:
                raise UnprocessableContent(
                    f"{duplicate!r} and {canonical!r} have cosine {score:.3f}, under "
                    f"{DUPLICATE_COSINE}: not near-duplicates",
                    action=self.spec.name,
                )

    def apply(self, ctx: ActionContext) -> dict[str, Any]:
        self.check(ctx)
        pairs = _pairs(ctx)
        with self.uow_factory(write=True, tenant_id=ctx.tenant_id) as uow:
            uow.associations.add_duplicates(ctx.tenant_id, pairs, ctx.action_id, utcnow())
            uow.commit()
        return {"pairs": len(pairs)}  # the same on a replay, which adds no edge

    def revert(self, ctx: ActionContext, result: dict[str, Any]) -> None:
        with self.uow_factory(write=True, tenant_id=ctx.tenant_id) as uow:
            uow.associations.remove_duplicates(ctx.tenant_id, ctx.action_id)
            uow.commit()

    def measure(self, ctx: ActionContext) -> Measurement:
        """1 - the share of result slots (top 10 of each probe) taken by a chunk whose stored
        embedding is within DUPLICATE_COSINE of a better-ranked result in the same list."""
        model = self.embedder().model_name
        duplicates = list(dict.fromkeys(d for d, _ in _pairs(ctx)))[:MAX_PROBES]
        with self.uow_factory(write=False, tenant_id=ctx.tenant_id) as uow:
            texts = uow.associations.chunk_vectors(ctx.tenant_id, duplicates, model)
        probes = [texts[d][0][:PROBE_CHARS] for d in duplicates if d in texts]
        search = self.search()
        slots = wasted = 0
        per_probe: list[dict[str, Any]] = []
        for i, probe in enumerate(probes):
            results = search.search(
                tenant_id=ctx.tenant_id, query=probe, k=10, mode=Mode.HYBRID,
                request_id=request_key(ctx, i), record_gaps=False,
            )  # fmt: skip
            ids = [r.atom_id for r in results]
            with self.uow_factory(write=False, tenant_id=ctx.tenant_id) as uow:
                vectors = uow.associations.chunk_vectors(ctx.tenant_id, ids, model)
            repeats = sum(
                1
                for n, atom in enumerate(ids)
                if atom in vectors
                and any(
                    earlier in vectors
                    and cosine(vectors[atom][1], vectors[earlier][1]) >= DUPLICATE_COSINE
                    for earlier in ids[:n]
                )
            )
            slots += len(ids)
            wasted += repeats
            per_probe.append({"results": len(ids), "duplicates": repeats})
        value = 1.0 - (wasted / slots if slots else 0.0)
        return Measurement(
            value=round(value, 6),
            details={"probes": len(probes), "slots": slots, "duplicate_slots": wasted,
                     "per_probe": per_probe, "cost_credits": search_cost(len(probes))},
        )  # fmt: skip
