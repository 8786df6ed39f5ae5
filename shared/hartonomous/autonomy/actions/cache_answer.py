"""``cache_answer``: serve a repeated prompt from the answer cache.

The entry is made from a receipt of the tenant: its question, model SHA-256, the retrieved
atoms its prompt used, its max_tokens and stop strings form the key
(``generation/answer_cache.py``), its output atom is the answer. Only a greedy receipt
(temperature 0) may be cached: a sampled answer is one of many. Generation serves the entry
while retrieval gives the same atoms. Measure replays the prompt once with the receipt's
parameters and filters (``GenerationService.replay``: no receipt, outbox event or knowledge
gap; usage keyed by the run, action and purpose): the credits it cost (0 on a hit), negated.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from hartonomous.autonomy.actions.base import ActionContext, ActionExecutor, Measurement
from hartonomous.autonomy.actions.learn_association import request_key
from hartonomous.autonomy.registry import REGISTRY
from hartonomous.errors import NotFound, UnprocessableContent
from hartonomous.generation.answer_cache import receipt_key, retrieved_ids
from hartonomous.generation.service import (
    GenerateRequest,
    GenerationService,
    filters_from_json,
)
from hartonomous.generation.store import ReceiptRow
from hartonomous.ports import UnitOfWorkFactory
from hartonomous.services.clock import new_id, utcnow


@dataclass
class CacheAnswer(ActionExecutor):
    uow_factory: UnitOfWorkFactory
    generation: Callable[[], GenerationService]
    spec = REGISTRY["cache_answer"]

    def _receipt(self, ctx: ActionContext) -> ReceiptRow:
        receipt_id = str(ctx.parameters["receipt_id"])
        with self.uow_factory(write=False, tenant_id=ctx.tenant_id) as uow:
            row = uow.receipts.get(ctx.tenant_id, receipt_id)
        if row is None:  # another tenant's receipt is not found either
            raise NotFound(f"no receipt {receipt_id!r}")
        if row.body.get("question") != ctx.parameters["prompt"]:
            raise UnprocessableContent(
                f"receipt {receipt_id!r} answers another prompt", action=self.spec.name
            )
        if float(row.body.get("parameters", {}).get("temperature", 1.0)) != 0.0:
            raise UnprocessableContent(
                f"receipt {receipt_id!r} was sampled (temperature > 0): only a greedy answer "
                "may be cached",
                action=self.spec.name,
            )
        return row

    def check(self, ctx: ActionContext) -> None:
        self._receipt(ctx)

    def apply(self, ctx: ActionContext) -> dict[str, Any]:
        with self.uow_factory(write=False, tenant_id=ctx.tenant_id) as uow:
            done = uow.answer_cache.for_action(ctx.tenant_id, ctx.action_id)
        if done is not None:
            return {"cache_key": done.cache_key, "entry_id": done.id}
        receipt = self._receipt(ctx)
        key = receipt_key(receipt.body, receipt.model_sha256)
        row = {"id": new_id(), "tenant_id": ctx.tenant_id, "action_id": ctx.action_id,
               "cache_key": key, "prompt": receipt.body["question"],
               "model_sha256": receipt.model_sha256, "atom_ids": retrieved_ids(receipt.body),
               "receipt_id": receipt.id, "output_atom_id": receipt.output_atom_id,
               "created_at": utcnow()}  # fmt: skip
        with self.uow_factory(write=True, tenant_id=ctx.tenant_id) as uow:
            added = uow.answer_cache.add(row)
            uow.commit()
        # Not added: the key was cached already (by another action, which owns that entry).
        return {"cache_key": key, "entry_id": row["id"] if added else None}

    def revert(self, ctx: ActionContext, result: dict[str, Any]) -> None:
        with self.uow_factory(write=True, tenant_id=ctx.tenant_id) as uow:
            uow.answer_cache.remove(ctx.tenant_id, ctx.action_id)
            uow.commit()

    def measure(self, ctx: ActionContext) -> Measurement:
        """-(credits of one replay of the prompt with the receipt's parameters and filters).
        A replay records no receipt, event or gap; its usage is the run's."""
        receipt = self._receipt(ctx)
        parameters = receipt.body.get("parameters", {})
        replayed = self.generation().replay(
            ctx.tenant_id,
            GenerateRequest(
                prompt=str(ctx.parameters["prompt"]),
                model_id=receipt.model_id,
                k=int(parameters.get("k", 5)),
                filters=filters_from_json(parameters.get("filters")),
                max_tokens=int(parameters["max_tokens"]),
                temperature=0.0,
                stop=tuple(parameters.get("stop") or ()),
            ),
            request_key(ctx, 0),
        )
        return Measurement(
            value=-replayed.credits,
            details={"credits": replayed.credits, "total_ms": replayed.total_ms,
                     "hit": replayed.hit, "atom_ids": replayed.atom_ids,
                     "cost_credits": replayed.cost_credits},
        )  # fmt: skip
