"""Knowledge gaps: recent searches whose best answer scored under the threshold."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from hartonomous.ports import UnitOfWorkFactory


@dataclass(frozen=True)
class KnowledgeGap:
    query: str
    mode: str
    best_score: float | None
    created_at: datetime


@dataclass
class GapService:
    uow_factory: UnitOfWorkFactory
    # Search records its gaps off its latency, on a background writer: flushed first, so a
    # search that just answered is listed.
    flush_writes: Callable[[], None]

    def recent(self, tenant_id: str) -> list[KnowledgeGap]:
        self.flush_writes()
        with self.uow_factory(write=False, tenant_id=tenant_id) as uow:
            rows = uow.knowledge.gaps(tenant_id)
        return [KnowledgeGap(r.query, r.mode, r.best_score, r.created_at) for r in rows]
