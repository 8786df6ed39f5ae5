"""``discover_concepts``: cluster a modality's chunks into concepts (docs/concepts.md).

Apply runs the whole discovery in the Act activity, under the run instance id
``loop-{action id}``: a replayed apply finds that run and answers what it found instead of
running again. Not reversible: concepts are only ever rediscovered, and a later run keeps
their ids. The metric is the share of the modality's chunks that belong to a concept.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from hartonomous.autonomy.actions.base import ActionContext, ActionExecutor, Measurement
from hartonomous.autonomy.registry import REGISTRY
from hartonomous.concepts.discovery import needed_chunks
from hartonomous.concepts.store import COMPLETED
from hartonomous.errors import Conflict, UnprocessableContent
from hartonomous.ports import UnitOfWorkFactory

if TYPE_CHECKING:
    from hartonomous.concepts.service import ConceptService


def loop_instance_id(action_id: str) -> str:
    return f"loop-{action_id}"


@dataclass
class DiscoverConcepts(ActionExecutor):
    uow_factory: UnitOfWorkFactory
    concepts: Callable[[], ConceptService]
    model: Callable[[], str]
    spec = REGISTRY["discover_concepts"]

    def check(self, ctx: ActionContext) -> None:
        modality = str(ctx.parameters["modality"])
        with self.uow_factory(write=False, tenant_id=ctx.tenant_id) as uow:
            if uow.concepts.run_by_instance(ctx.tenant_id, loop_instance_id(ctx.action_id)):
                return  # this action's own run: a replay
            have = uow.concepts.count_chunks(ctx.tenant_id, modality, self.model())
            running = uow.concepts.running(ctx.tenant_id, modality)
        if have < needed_chunks(None):
            raise UnprocessableContent(
                f"{needed_chunks(None)} chunks of modality {modality!r} are needed; the tenant "
                f"has {have}",
                needed=needed_chunks(None), found=have,
            )  # fmt: skip
        if running is not None:
            raise Conflict(f"a discovery of {modality} concepts is running (run {running.id})")

    def apply(self, ctx: ActionContext) -> dict[str, Any]:
        modality = str(ctx.parameters["modality"])
        instance_id = loop_instance_id(ctx.action_id)
        with self.uow_factory(write=False, tenant_id=ctx.tenant_id) as uow:
            done = uow.concepts.run_by_instance(ctx.tenant_id, instance_id)
        if done is not None and done.status == COMPLETED:
            return _result(done.id, done.summary or {})
        out = self.concepts().run_now(ctx.tenant_id, modality, None, "loop",
                                      instance_id=instance_id)  # fmt: skip
        return _result(out["run_id"], out)

    def measure(self, ctx: ActionContext) -> Measurement:
        modality = str(ctx.parameters["modality"])
        with self.uow_factory(write=False, tenant_id=ctx.tenant_id) as uow:
            chunks = uow.concepts.count_chunks(ctx.tenant_id, modality, self.model())
            members = uow.concepts.count_members(ctx.tenant_id, modality)
        return Measurement(
            value=round(members / chunks, 6) if chunks else 0.0,
            details={"chunks": chunks, "members": members, "cost_credits": 0.0},
        )


def _result(run_id: str, summary: dict[str, Any]) -> dict[str, Any]:
    clustered = summary.get("clustered") or {}
    return {"run_id": run_id, "concepts": clustered.get("k"), "chunks": clustered.get("chunks")}
