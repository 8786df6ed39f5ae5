"""``ConceptService``: what the routes, the CLI, the timer and the loop ask of concepts."""

from __future__ import annotations

import base64
import binascii
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from anyio import to_thread

from hartonomous.billing.money import to_micros
from hartonomous.concepts.discovery import ConceptDiscovery, RunRef, needed_chunks
from hartonomous.concepts.store import (
    BROAD,
    FAILED,
    ConceptRow,
    GraphEdge,
    RunRow,
)
from hartonomous.concepts.workflow import DISCOVER
from hartonomous.errors import (
    Conflict,
    HartonomousError,
    InvalidInput,
    NotFound,
    UnprocessableContent,
)
from hartonomous.metering.pricing import price
from hartonomous.ports import UnitOfWorkFactory, WorkflowClient
from hartonomous.services.clock import new_id, utcnow
from hartonomous.services.pages import Page, page_of, position_after
from hartonomous.services.workflows import WorkflowService

log = logging.getLogger(__name__)

SCHEDULE_PAGE = 200


@dataclass(frozen=True)
class Related:
    concept_id: str
    name: str
    kind: str
    confidence: float
    evidence: dict[str, Any]


@dataclass(frozen=True)
class ConceptView:
    concept: ConceptRow
    parents: list[Related]  # this IS_A them
    children: list[Related]  # they IS_A this
    related: list[Related]
    lineage: list[Related]  # SPLIT_FROM / MERGED_INTO, either way
    narrower: list[ConceptRow] = field(default_factory=list)  # a broad concept's group


@dataclass(frozen=True)
class MemberPage:
    items: list[tuple[str, float]]  # (atom id, distance)
    next_cursor: str | None


@dataclass(frozen=True)
class StartedDiscovery:
    run_id: str
    instance_id: str


def _member_cursor(distance: float, atom_id: str) -> str:
    return base64.urlsafe_b64encode(json.dumps([distance, atom_id]).encode()).decode().rstrip("=")


def _member_position(cursor: str | None) -> tuple[float, str] | None:
    if not cursor:
        return None
    try:
        distance, atom_id = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        return float(distance), str(atom_id)
    except (binascii.Error, ValueError, TypeError) as exc:
        raise InvalidInput("the cursor is not one this API returned; pass it unchanged") from exc


class ConceptService:
    def __init__(
        self,
        uow_factory: UnitOfWorkFactory,
        workflows: WorkflowService,
        discovery: ConceptDiscovery,
        model: Callable[[], str],
        require: Callable[[str, int, str], object],
        max_chunks: int,
    ) -> None:
        self._uow, self._workflows, self.discovery, self._model = (
            uow_factory, workflows, discovery, model,
        )  # fmt: skip
        self._require, self._max_chunks = require, max_chunks

    # -- discovery --------------------------------------------------------------------------

    def prepare(
        self,
        tenant_id: str,
        modality: str,
        k: int | None,
        origin: str,
        seed: int = 0,
        instance_id: str | None = None,
    ) -> RunRow:
        """Check there is enough to cluster (422) and record the run (409 while one runs)."""
        need = needed_chunks(k)
        with self._uow(write=False, tenant_id=tenant_id) as uow:
            have = uow.concepts.count_chunks(tenant_id, modality, self._model(), at_most=need)
            bound = uow.concepts.count_all_chunks(tenant_id)
        if have < need:
            raise UnprocessableContent(
                f"{need} chunks of modality {modality!r} are needed to find {k or 2} concepts "
                f"(at least {need // max(k or 2, 1)} per concept); the tenant has {have}",
                needed=need, found=have,
            )  # fmt: skip
        # Priced per chunk clustered, settled by the run's write (usage key concepts:{run});
        # checked against the tenant's chunks of every modality, an upper bound read by index.
        estimate = price({"concepts.chunks": min(bound, self._max_chunks)}).credits
        self._require(tenant_id, to_micros(estimate), "a concept discovery")
        run_id = new_id()
        run = RunRow(
            id=run_id, tenant_id=tenant_id, modality=modality,
            instance_id=instance_id or f"concepts-{run_id}",
            origin=origin, status="running", k_requested=k, seed=seed, summary=None, error=None,
            started_at=utcnow(), ended_at=None,
        )  # fmt: skip
        with self._uow(write=True, tenant_id=tenant_id) as uow:
            uow.concepts.start_run(run)
            uow.commit()
        return run

    async def start(
        self,
        client: WorkflowClient,
        tenant_id: str,
        modality: str,
        k: int | None,
        origin: str = "api",
        seed: int = 0,
    ) -> StartedDiscovery:
        run = await to_thread.run_sync(lambda: self.prepare(tenant_id, modality, k, origin, seed))
        try:
            await self._workflows.start(
                client,
                tenant_id=tenant_id,
                name=DISCOVER,
                input={"tenant_id": tenant_id, "run_id": run.id},
                instance_id=run.instance_id,
            )
        except BaseException as exc:
            await to_thread.run_sync(self.abandon, tenant_id, run.id, str(exc) or repr(exc))
            raise
        return StartedDiscovery(run.id, run.instance_id)

    def abandon(self, tenant_id: str, run_id: str, why: str) -> None:
        with self._uow(write=True, tenant_id=tenant_id) as uow:
            uow.concepts.finish_run(tenant_id, run_id, FAILED, utcnow(), None, why[:2000])
            uow.commit()

    def run_now(self, tenant_id: str, modality: str, k: int | None, origin: str,
                seed: int = 0, instance_id: str | None = None) -> dict[str, Any]:  # fmt: skip
        """The whole discovery in this thread (the CLI, the loop's action, benchmarks)."""
        run = self.prepare(tenant_id, modality, k, origin, seed, instance_id)
        ref = RunRef(tenant_id, run.id)
        try:
            self.discovery.cluster(ref)
            self.discovery.bind(ref)
        except Exception as exc:
            self.discovery.finish(ref, str(exc))
            raise
        return self.discovery.finish(ref, None)

    async def start_scheduled(self, client: WorkflowClient) -> int:
        """The hourly timer: a discovery for each enabled schedule not already running."""
        started, after = 0, None
        while True:
            rows = await to_thread.run_sync(self._enabled, after)
            for tenant_id, modality, k in rows:
                try:
                    await self.start(client, tenant_id, modality, k, origin="schedule")
                    started += 1
                except (Conflict, UnprocessableContent) as exc:  # running, or too little yet
                    log.info("no scheduled discovery for %s/%s: %s", tenant_id, modality,
                             exc.detail)  # fmt: skip
                except HartonomousError as exc:
                    log.warning("scheduled discovery %s/%s failed to start: %s", tenant_id,
                                modality, exc.detail)  # fmt: skip
            if len(rows) < SCHEDULE_PAGE:
                return started
            after = (rows[-1][0], rows[-1][1])

    def _enabled(self, after: tuple[str, str] | None) -> list[tuple[str, str, int | None]]:
        with self._uow(write=False) as uow:
            rows = uow.concepts.enabled_schedules(after, SCHEDULE_PAGE)
        return [(r.tenant_id, r.modality, r.k) for r in rows]

    def set_schedule(self, tenant_id: str, modality: str, enabled: bool, k: int | None) -> None:
        with self._uow(write=True, tenant_id=tenant_id) as uow:
            uow.concepts.set_schedule(tenant_id, modality, enabled, k, utcnow())
            uow.commit()

    def schedules(self, tenant_id: str) -> list[dict[str, Any]]:
        with self._uow(write=False, tenant_id=tenant_id) as uow:
            return uow.concepts.schedules(tenant_id)

    def runs(self, tenant_id: str, limit: int) -> list[RunRow]:
        with self._uow(write=False, tenant_id=tenant_id) as uow:
            return uow.concepts.runs(tenant_id, limit)

    # -- reading ----------------------------------------------------------------------------

    def page(
        self,
        tenant_id: str,
        cursor: str | None,
        limit: int,
        modality: str | None = None,
        state: str | None = "active",
        level: int | None = None,
    ) -> Page[ConceptRow]:
        after = position_after(cursor)
        with self._uow(write=False, tenant_id=tenant_id) as uow:
            rows = uow.concepts.page(tenant_id, limit + 1, after, modality, state, level)
        return page_of(rows, limit, lambda c: (c.created_at, c.id))

    def get(self, tenant_id: str, concept_id: str) -> ConceptView:
        with self._uow(write=False, tenant_id=tenant_id) as uow:
            concept = uow.concepts.get(tenant_id, concept_id)
            if concept is None:
                raise NotFound(f"no concept {concept_id!r}")
            graph = uow.concepts.graph_edges(
                tenant_id, ("IS_A", "RELATED", "SPLIT_FROM", "MERGED_INTO"), concept_id
            )
            others = uow.concepts.get_many(
                tenant_id, sorted({e.src_id for e in graph} | {e.dst_id for e in graph})
            )
            narrower = (
                uow.concepts.narrower(tenant_id, concept_id) if concept.level == BROAD else []
            )

        def other(edge: GraphEdge) -> Related:
            oid = edge.dst_id if edge.src_id == concept_id else edge.src_id
            name = others[oid].name if oid in others else ""
            return Related(oid, name, edge.kind, edge.confidence, edge.evidence)

        return ConceptView(
            concept=concept,
            parents=[other(e) for e in graph if e.kind == "IS_A" and e.src_id == concept_id],
            children=[other(e) for e in graph if e.kind == "IS_A" and e.dst_id == concept_id],
            related=[other(e) for e in graph if e.kind == "RELATED"],
            lineage=[other(e) for e in graph if e.kind in ("SPLIT_FROM", "MERGED_INTO")],
            narrower=narrower,
        )

    def members(self, tenant_id: str, concept_id: str, cursor: str | None,
                limit: int) -> MemberPage:  # fmt: skip
        after = _member_position(cursor)
        with self._uow(write=False, tenant_id=tenant_id) as uow:
            concept = uow.concepts.get(tenant_id, concept_id)
            if concept is None:
                raise NotFound(f"no concept {concept_id!r}")
            held = (
                [c.atom_id for c in uow.concepts.narrower(tenant_id, concept_id)]
                if concept.level == BROAD else [concept.atom_id]
            )  # fmt: skip
            rows = uow.concepts.members(tenant_id, held, limit + 1, after) if held else []
        more = len(rows) > limit
        rows = rows[:limit]
        nxt = _member_cursor(rows[-1][1], rows[-1][0]) if more and rows else None
        return MemberPage(rows, nxt)

    def of_atom(self, tenant_id: str, atom_id: str) -> tuple[ConceptRow, float] | None:
        with self._uow(write=False, tenant_id=tenant_id) as uow:
            return uow.concepts.of_atom(tenant_id, atom_id)
