"""A run's receipt: its steps' receipts in order, so its answer's lineage reaches its sources.

Each model step has a generation receipt (prompt atom, retrieved atoms, the model's SHA-256,
output atom, tokens, cost); each tool step records the platform's decision, its decider and
the atoms the tool surfaced. The run's receipt lists them as they happened, with the
violations and the released answer, and is stored on the run when it ends.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from hartonomous.agents.records import AgentRunRecord, StepRecord
    from hartonomous.ports import UnitOfWork

FORMAT = "hartonomous.agent-run/1"


def step_entry(step: StepRecord) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "step": step.step,
        "kind": step.kind,
        "status": step.status,
        "decided_by": step.decided_by,
        "cost_credits": round(step.cost_credits, 6),
    }
    result = step.result or {}
    if step.kind == "model":
        entry["receipt_id"] = step.receipt_id
        entry["output_atom_id"] = result.get("output_atom_id")
    else:
        entry |= {"tool": step.name, "arguments": step.arguments,
                  "atoms": result.get("atoms", [])}  # fmt: skip
    return entry


def run_receipt(uow: UnitOfWork, run: AgentRunRecord) -> dict[str, Any]:
    """The receipt of ``run`` as the store has it now (complete once the run has ended)."""
    repo = uow.agents
    version = repo.version(run.tenant_id, run.version_id)
    spec = version.spec if version else {}
    return {
        "format": FORMAT,
        "run_id": run.id,
        "status": run.status,
        "agent": {"name": run.agent_name, "version_id": run.version_id},
        "model": spec.get("model"),
        "knowledge": {"filters": spec.get("filters"), "snapshot": spec.get("snapshot")},
        "input_sha256": hashlib.sha256(run.input_text.encode("utf-8")).hexdigest(),
        "seed": run.seed,
        "steps": [step_entry(s) for s in repo.steps(run.tenant_id, run.id)],
        "violations": [
            {"step": v.step, "rule": v.rule_type, "detail": v.detail, "outcome": v.outcome}
            for v in repo.violations(run.tenant_id, run.id)
        ],
        "answer": (
            {"atom_id": run.answer_atom_id, "text": run.answer} if run.answer is not None else None
        ),
        "spent_credits": round(run.spent_credits, 6),
        "started_at": run.started_at.isoformat(),
        "ended_at": run.ended_at.isoformat() if run.ended_at else None,
    }
