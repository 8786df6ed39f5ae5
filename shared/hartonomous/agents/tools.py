"""Agents' tools (the registry's ``AGENT_TOOLS``): what each does once the platform let it run.

Every tool works inside the agent's frozen knowledge scope (its filters and snapshot), never
the tenant's whole knowledge: ``search`` searches only the scope, ``read_atom`` reads only a
passage of the scope. ``save_note`` writes a text atom for the tenant. The governor has
already judged the call (allow-list, constitution, policy, schema) before ``run`` is reached;
a tool's own refusal (an atom outside the scope) is a ``ToolError`` the model is told about.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from hartonomous.agents.scope import effective
from hartonomous.errors import HartonomousError
from hartonomous.knowledge.search import Mode, SearchService
from hartonomous.knowledge.store import SearchFilter, allowed_chunks_query
from hartonomous.metering.ledger import Usage
from hartonomous.metering.pricing import price
from hartonomous.ports import UnitOfWorkFactory
from hartonomous.services.atoms import AtomService
from hartonomous.services.clock import utcnow

TEXT = "text/plain; charset=utf-8"
PASSAGE_CHARS = 600  # of each passage a tool hands the model (its atom id reaches it whole)
DEFAULT_K = 3


class ToolError(HartonomousError):
    """The tool refused or failed; the model is told why, and the run goes on."""

    status = 422
    title = "Tool refused"
    slug = "tool-refused"


@dataclass(frozen=True)
class ToolContext:
    tenant_id: str
    run_id: str
    step: int
    agent_name: str
    scope: SearchFilter  # the agent's filters with its snapshot


@dataclass(frozen=True)
class Passage:
    atom_id: str
    text: str
    document_id: str | None


@dataclass(frozen=True)
class ToolResult:
    passages: list[Passage] = field(default_factory=list)  # atoms it surfaced (citable)
    note_atom_id: str | None = None
    cost_credits: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "atoms": [p.atom_id for p in self.passages],
            "passages": [
                {"atom_id": p.atom_id, "text": p.text, "document_id": p.document_id}
                for p in self.passages
            ],
            "note_atom_id": self.note_atom_id,
        }


@dataclass
class AgentTools:
    uow_factory: UnitOfWorkFactory
    atoms: AtomService
    search: Callable[[], SearchService]

    def run(self, ctx: ToolContext, name: str, arguments: dict[str, Any]) -> ToolResult:
        handler = {"search": self._search, "read_atom": self._read, "save_note": self._note}.get(
            name
        )
        if handler is None:  # the governor refuses these first; this is the second wall
            raise ToolError(f"{name} is not an agents' tool")
        return handler(ctx, arguments)

    def _search(self, ctx: ToolContext, arguments: dict[str, Any]) -> ToolResult:
        with self.uow_factory(write=False, tenant_id=ctx.tenant_id) as uow:
            scope = effective(uow, ctx.tenant_id, ctx.scope)
        hits = self.search().search(
            tenant_id=ctx.tenant_id, query=arguments["query"],
            k=int(arguments.get("k", DEFAULT_K)),  # JSON Schema's integers include 3.0
            mode=Mode.HYBRID, flt=scope, request_id=f"agent:{ctx.run_id}:{ctx.step}:tool",
            record_gaps=False,
        )  # fmt: skip
        passages = [Passage(h.atom_id, h.text[:PASSAGE_CHARS], h.document_id) for h in hits]
        return ToolResult(passages, cost_credits=price({"search.queries": 1}).credits)

    def _read(self, ctx: ToolContext, arguments: dict[str, Any]) -> ToolResult:
        atom_id = arguments["atom_id"]
        with self.uow_factory(write=False, tenant_id=ctx.tenant_id) as uow:
            allowed = allowed_chunks_query(ctx.tenant_id, ctx.scope)
            inside = uow.associations.allowed_among(allowed, [atom_id])
            info = uow.knowledge.describe(ctx.tenant_id, [atom_id], None) if inside else {}
        chunk = info.get(atom_id)
        if chunk is None:
            raise ToolError(f"atom {atom_id} is not a passage of the agent's knowledge scope")
        return ToolResult([Passage(atom_id, chunk.text[:PASSAGE_CHARS], chunk.document_id)])

    def _note(self, ctx: ToolContext, arguments: dict[str, Any]) -> ToolResult:
        text = f"{arguments['title']}\n\n{arguments['text']}".encode()
        metadata = {
            "kind": "agent-note", "title": arguments["title"], "agent": ctx.agent_name,
            "run_id": ctx.run_id, "step": ctx.step,
        }  # fmt: skip
        stored = self.atoms.store_bytes(
            tenant_id=ctx.tenant_id, chunks=[text], media_type=TEXT, metadata=metadata
        )
        quantities = {"agent.notes": 1}
        with self.uow_factory(write=True, tenant_id=ctx.tenant_id) as uow:
            uow.usage.record(
                ctx.tenant_id, f"agent:{ctx.run_id}:{ctx.step}:tool",
                [Usage("agent.notes", 1, "notes")], utcnow(),
            )  # fmt: skip
            uow.commit()
        return ToolResult(note_atom_id=stored.atom.id, cost_credits=price(quantities).credits)
