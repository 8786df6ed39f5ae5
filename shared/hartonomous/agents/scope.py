"""An agent's knowledge scope: its compiled filters at its snapshot, and what a search
needs for it now."""

from __future__ import annotations

from typing import TYPE_CHECKING

from hartonomous.agents.compiled import CompiledAgent
from hartonomous.generation.service import filters_from_json
from hartonomous.knowledge.store import SearchFilter

if TYPE_CHECKING:
    from hartonomous.ports import UnitOfWork


def scope_filter(agent: CompiledAgent) -> SearchFilter:
    """The frozen knowledge scope: the compiled filters, at the compiled snapshot."""
    flt = filters_from_json(agent.filters)
    return SearchFilter(**{**flt.__dict__, "snapshot": agent.snapshot})


def effective(uow: UnitOfWork, tenant_id: str, scope: SearchFilter) -> SearchFilter:
    """The filter a search needs for ``scope`` now: none at all when the scope is the whole
    tenant and nothing was indexed since its snapshot (the same chunks, without building the
    allowed set: 26 to 40 ms at 10k chunks, measured by bench/agents.py's author)."""
    whole = SearchFilter(**{**scope.__dict__, "snapshot": None}).empty
    if whole and scope.snapshot is not None and uow.knowledge.snapshot(tenant_id) <= scope.snapshot:
        return SearchFilter()
    return scope
