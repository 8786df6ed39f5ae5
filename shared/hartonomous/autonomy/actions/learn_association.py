"""``learn_association``: link a knowledge-gap query to the chunk that answers it.

Check refuses a query that is not a recorded knowledge gap of the tenant (its group, below,
must hold at least one recorded gap) and, 409, a tenant at its cap of associations
(``autonomy_max_associations``: every search reads them). Apply stores the query as an atom
with its vector, a ``learned_associations`` row and a ``LEARNED_ASSOCIATION`` edge (query
atom -> chunk), in one transaction keyed by the action id. Search then lifts the chunk to
the top for queries whose vector is close to this one (``knowledge/search.py``,
``LIFT_THRESHOLD``). Revert removes the row and the edge, and the query atom when nothing
else uses it.

Measure replays the action's **gap group**, recorded queries only: the distinct queries of
the tenant's newest ``RECENT_GAPS`` knowledge gaps recorded at or before the action's
creation (its row's ``created_at``; a check before the row exists reads up to now) whose
normalised text is the action's query's or whose embedding has cosine >= ``GROUP_COSINE``
to it, closest first (a normalised match counts as 1.0, ties by text), at most
``GROUP_SIZE``. The action's own query is replayed only as one of those gaps. Gaps recorded
later never join, so the measurement before and the one after replay the same queries: a
plan cannot pick the queries its own association is judged on.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np

from hartonomous.autonomy.actions.base import ActionContext, ActionExecutor, Measurement
from hartonomous.autonomy.registry import REGISTRY
from hartonomous.errors import Conflict, NotFound, UnprocessableContent
from hartonomous.knowledge.associations import normalise_query
from hartonomous.knowledge.search import Mode, SearchService
from hartonomous.metering.pricing import price
from hartonomous.ports import Embedder, UnitOfWorkFactory
from hartonomous.services.atoms import AtomService
from hartonomous.services.clock import new_id, utcnow

QUERY_MEDIA_TYPE = "text/plain; charset=utf-8"
# A recorded gap query joins the action's group at this cosine or more.
# MiniLM: paraphrases median 0.78, different questions on one topic at most 0.74, unrelated
# at most 0.39 (the figures beside LIFT_THRESHOLD in knowledge/search.py).
GROUP_COSINE = 0.75
GROUP_SIZE = 10  # recorded gap queries replayed per measurement
RECENT_GAPS = 200  # recorded gaps considered
DEFAULT_MAX_ASSOCIATIONS = 1000  # Settings.autonomy_max_associations


def request_key(ctx: ActionContext, i: int) -> str:
    """The request id a measurement's i-th search or replay meters its usage under."""
    return f"autonomy:{ctx.run_id}:{ctx.action_id}:{ctx.purpose}:{i}"


def search_cost(searches: int) -> float:
    """Credits of a measurement's searches (what the loop charges for it)."""
    return price({"search.queries": searches}).credits


@dataclass
class LearnAssociation(ActionExecutor):
    uow_factory: UnitOfWorkFactory
    atoms: AtomService
    search: Callable[[], SearchService]
    embedder: Callable[[], Embedder]
    # Every search reads the tenant's associations: the cap bounds that work per search.
    max_associations: int = DEFAULT_MAX_ASSOCIATIONS
    spec = REGISTRY["learn_association"]

    def check(self, ctx: ActionContext) -> None:
        query, atom_id = str(ctx.parameters["query"]), str(ctx.parameters["atom_id"])
        if not query.strip():
            raise UnprocessableContent("the query is empty", action=self.spec.name)
        with self.uow_factory(write=False, tenant_id=ctx.tenant_id) as uow:
            chunk = uow.associations.chunk_ids(ctx.tenant_id, [atom_id])
            held = uow.associations.association_count(ctx.tenant_id)
            mine = uow.associations.association_for_action(ctx.tenant_id, ctx.action_id)
        if not chunk:  # another tenant's atom is not found either
            raise NotFound(f"no chunk atom {atom_id!r}")
        if mine is None and held >= self.max_associations:
            raise Conflict(
                f"the tenant holds {held} learned associations, the most it may "
                f"(autonomy_max_associations = {self.max_associations}); revert some first",
                limit=self.max_associations,
            )
        if not self.gap_group(ctx.tenant_id, query, None):
            raise UnprocessableContent(
                f"{query!r} is not a recorded knowledge gap of the tenant (no gap's query "
                f"matches it or has cosine >= {GROUP_COSINE} to it)",
                action=self.spec.name,
            )

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
        """The association and its edge, then the query atom when it is the loop's own (kind
        query) and nothing else names it, through AtomService.delete (blob refcounts)."""
        with self.uow_factory(write=True, tenant_id=ctx.tenant_id) as uow:
            done = uow.associations.association_for_action(ctx.tenant_id, ctx.action_id)
            uow.associations.remove_association(ctx.tenant_id, ctx.action_id)
            uow.commit()
        query_atom_id = done.query_atom_id if done else result.get("query_atom_id")
        if not query_atom_id:
            return
        with self.uow_factory(write=False, tenant_id=ctx.tenant_id) as uow:
            atom = uow.atoms.get(ctx.tenant_id, str(query_atom_id))
            used = uow.associations.atom_in_use(ctx.tenant_id, str(query_atom_id))
        if atom is None or used or atom.metadata.get("kind") != "query":
            return
        # Gone meanwhile (a replayed revert), or named by a receipt or a model: kept.
        with contextlib.suppress(NotFound, Conflict):
            self.atoms.delete(tenant_id=ctx.tenant_id, atom_id=atom.id)

    def measure(self, ctx: ActionContext) -> Measurement:
        """Mean reciprocal rank of the atom over the action's gap group (0 where it is not
        in the top 10; 0 for an empty group), replayed with no gap of its own recorded."""
        atom_id = str(ctx.parameters["atom_id"])
        queries = self.gap_group(ctx.tenant_id, str(ctx.parameters["query"]), self._until(ctx))
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
        mrr = sum(1.0 / r for r in ranks if r) / len(queries) if queries else 0.0
        return Measurement(
            value=round(mrr, 6),
            details={"queries": queries, "ranks": ranks, "scores": scores,
                     "cost_credits": search_cost(len(queries))},
        )  # fmt: skip

    def _until(self, ctx: ActionContext) -> datetime | None:
        """The action's creation: gaps recorded later are not in its group."""
        with self.uow_factory(write=False, tenant_id=ctx.tenant_id) as uow:
            action = uow.autonomy.action(ctx.tenant_id, ctx.action_id)
        return action.created_at if action else None

    def gap_group(self, tenant_id: str, query: str, until: datetime | None) -> list[str]:
        """The recorded gap queries (at or before ``until``; None: all) of the action's
        query's group, closest first (the module docstring says the rule)."""
        with self.uow_factory(write=False, tenant_id=tenant_id) as uow:
            recorded = uow.associations.gap_queries(tenant_id, until, RECENT_GAPS)
        distinct: dict[str, str] = {}
        for text in recorded:  # newest first: a group's text is its newest wording
            distinct.setdefault(normalise_query(text), text)
        distinct.pop("", None)
        if not distinct:
            return []
        own = normalise_query(query)
        texts = list(distinct.values())
        vectors = self.embedder().embed([query, *texts])
        cosines = vectors[1:] @ vectors[0]
        close = [
            (1.0 if norm == own else float(c), text)
            for (norm, text), c in zip(distinct.items(), cosines, strict=True)
            if norm == own or c >= GROUP_COSINE
        ]
        close.sort(key=lambda item: (-item[0], item[1]))
        return [text for _, text in close[:GROUP_SIZE]]


def _result(association_id: str, query_atom_id: str, atom_id: str) -> dict[str, Any]:
    return {"association_id": association_id, "query_atom_id": query_atom_id, "atom_id": atom_id}
