"""Reading what generations recorded: receipts, and the lineage graph around an atom."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from hartonomous.errors import NotFound
from hartonomous.generation.lineage import Direction, walk
from hartonomous.ports import UnitOfWorkFactory


@dataclass
class ProvenanceService:
    uow_factory: UnitOfWorkFactory

    def receipt(self, tenant_id: str, receipt_id: str) -> dict[str, Any]:
        """A generation's receipt: the ordered components that produced its output."""
        with self.uow_factory(write=False, tenant_id=tenant_id) as uow:
            row = uow.receipts.get(tenant_id, receipt_id)
        if row is None:
            raise NotFound(f"no receipt {receipt_id!r}")
        return row.body

    def lineage(
        self, tenant_id: str, atom_id: str, direction: Direction, depth: int
    ) -> dict[str, Any]:
        """Nodes and edges within ``depth`` steps of the atom (404 when it is not the
        tenant's): up to what it was made from, down to what it went into."""
        with self.uow_factory(write=False, tenant_id=tenant_id) as uow:
            if uow.atoms.get(tenant_id, atom_id) is None:
                raise NotFound(f"no atom {atom_id!r}")
            return walk(uow.lineage, tenant_id, atom_id, direction, depth)
