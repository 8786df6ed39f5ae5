"""``learn_association``: link a knowledge-gap query to the chunk that answers it.

Apply stores the query as an atom with its vector, a ``learned_associations`` row and a
``LEARNED_ASSOCIATION`` edge (query atom -> chunk), in one transaction keyed by the action
id. Search then lifts the chunk to the top for queries whose vector is close to this one
(``knowledge/search.py``, ``LIFT_THRESHOLD``). Measure replays the gap's queries.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from hartonomous.autonomy.actions.base import ActionContext, ActionExecutor, Measurement
from hartonomous.autonomy.registry import REGISTRY
from hartonomous.errors import NotFound, UnprocessableContent
from hartonomous.knowledge.search import Mode, SearchService
from hartonomous.ports import Embedder, UnitOfWorkFactory
from hartonomous.services.atoms import AtomService
from hartonomous.services.clock import new_id, utcnow

QUERY_MEDIA_TYPE = "text/plain; charset=utf-8"
# A recorded gap query joins the action's query in its measurement at this cosine or more.
# MiniLM: paraphrases median 0.78, different questions on one topic at most 0.74, unrelated
# at most 0.39 (the figures beside LIFT_THRESHOLD in knowledge/search.py).
GROUP_COSINE = 0.75
GROUP_SIZE = 10  # queries replayed per measurement, the action's own first
RECENT_GAPS = 200  # recorded gaps considered


def request_key(ctx: ActionContext, i: int) -> str:
    """The request id a measurement's i-th search meters its usage under."""
    return f"autonomy:{ctx.run_id}:{ctx.action_id}:{ctx.purpose}:{i}"


@dataclass
class LearnAssociation(ActionExecutor):
    uow_factory: UnitOfWorkFactory
    atoms: AtomService
    search: Callable[[], SearchService]
    embedder: Callable[[], Embedder]
    spec = REGISTRY["learn_association"]

    def check(self, ctx: ActionContext) -> None:
        query, atom_id = str(ctx.parameters["query"]), str(ctx.parameters["atom_id"])
        if not query.strip():
            raise UnprocessableContent("the query is empty", action=self.spec.name)
        with self.uow_factory(write=False, tenant_id=ctx.tenant_id) as uow:
            chunk = uow.associations.chunk_ids(ctx.tenant_id, [atom_id])
        if not chunk:  # another tenant's atom is not found either
            raise NotFound(f"no chunk atom {atom_id!r}")

    def apply(self, ctx: ActionContext) -> dict[str, Any]:
        with self.uow_factory(write=False, tenant_id=ctx.tenant_id) as uow:
            done = uow.associations.association_for_action(ctx.tenant_id, ctx.action_id)
        if done is not None:
            return _result(done.id, done.query_atom_id, done.atom_id)
        self.check(ctx)
        query, atom_id = str(ctx.parameters["query"]), str(ctx.parameters["atom_id"])
        embedder = self.embedder()
        vector = embedder.embed([query])[0].astype(np.float32).tobytes()
        staged = self.atoms.stage(query.encode("utf-8"))
        try:
            with self.uow_factory(write=True, tenant_id=ctx.tenant_id) as uow:
                stored = self.atoms.record_in(
                    uow, ctx.tenant_id, staged, QUERY_MEDIA_TYPE, {"kind": "query"}
                )
                row = {"id": new_id(), "tenant_id": ctx.tenant_id, "action_id": ctx.action_id,
                       "query": query, "model": embedder.model_name, "query_vector": vector,
                       "query_atom_id": stored.atom.id, "atom_id": atom_id,
                       "created_at": utcnow()}  # fmt: skip
                if not uow.associations.add_association(row):  # a concurrent replay won
                    uow.commit()
                    return self.apply(ctx)
                uow.commit()
        finally:
            staged.discard()
        return _result(row["id"], stored.atom.id, atom_id)

    def revert(self, ctx: ActionContext, result: dict[str, Any]) -> None:
        with self.uow_factory(write=True, tenant_id=ctx.tenant_id) as uow:
            uow.associations.remove_association(ctx.tenant_id, ctx.action_id)
            uow.commit()

    def measure(self, ctx: ActionContext) -> Measurement:
        """Mean reciprocal rank of the atom over the gap group (0 where it is not in the top
        10): the action's query and the recorded gap queries close to it, replayed."""
        query, atom_id = str(ctx.parameters["query"]), str(ctx.parameters["atom_id"])
        queries = self.gap_group(ctx.tenant_id, query)
        search = self.search()
        ranks: list[int | None] = []
        scores: list[float | None] = []
        for i, text in enumerate(queries):
            results = search.search(
                tenant_id=ctx.tenant_id, query=text, k=10, mode=Mode.HYBRID,
                request_id=request_key(ctx, i), record_gaps=False,
            )  # fmt: skip
            hit = next((r for r in results if r.atom_id == atom_id), None)
            ranks.append(hit.rank if hit else None)
            scores.append(hit.score if hit else None)
        mrr = sum(1.0 / r for r in ranks if r) / len(queries)
        return Measurement(
            value=round(mrr, 6), details={"queries": queries, "ranks": ranks, "scores": scores}
        )

    def gap_group(self, tenant_id: str, query: str) -> list[str]:
        """The query and up to 9 distinct recent gap queries at cosine >= GROUP_COSINE."""
        with self.uow_factory(write=False, tenant_id=tenant_id) as uow:
            gaps = uow.knowledge.gaps(tenant_id, RECENT_GAPS)
        others = [q for q in dict.fromkeys(str(g.query) for g in gaps) if q != query]
        if not others:
            return [query]
        vectors = self.embedder().embed([query, *others])
        cosines = vectors[1:] @ vectors[0]
        close = sorted(
            ((float(c), q) for c, q in zip(cosines, others, strict=True) if c >= GROUP_COSINE),
            key=lambda item: -item[0],
        )
        return [query, *(q for _, q in close[: GROUP_SIZE - 1])]


def _result(association_id: str, query_atom_id: str, atom_id: str) -> dict[str, Any]:
    return {"association_id": association_id, "query_atom_id": query_atom_id, "atom_id": atom_id}
