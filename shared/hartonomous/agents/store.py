"""The agent factory's tables (``uow.agents``): names, immutable versions, runs, steps,
violations and approvals. Every method scopes by tenant; state changes are compare-and-set
and inserts are insert-or-ignore on their natural key, so a replayed activity changes
nothing twice."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import asdict
from datetime import datetime
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from hartonomous.agents.records import (
    AgentApprovalRecord,
    AgentRecord,
    AgentRunRecord,
    StepRecord,
    VersionRecord,
    ViolationRecord,
)
from hartonomous.store.rows import newest_first, record
from hartonomous.store.schema import (
    agent_approvals,
    agent_runs,
    agent_steps,
    agent_versions,
    agent_violations,
    agents,
)

if TYPE_CHECKING:
    from hartonomous.ports import InsertOrIgnore

RUN_ENDED = "run-ended"  # the decider of approvals a run's end expired


class AgentRepository:
    def __init__(self, conn: sa.Connection, insert_or_ignore: InsertOrIgnore) -> None:
        self._conn = conn
        self._insert_new = insert_or_ignore

    # -- names -------------------------------------------------------------------------------

    def agent(self, tenant_id: str, name: str) -> AgentRecord | None:
        t = agents
        row = self._conn.execute(
            t.select().where(t.c.tenant_id == tenant_id, t.c.name == name)
        ).first()
        return record(AgentRecord, row) if row else None

    def agents(
        self, tenant_id: str, limit: int, after: str | None = None, *, retired: bool = False
    ) -> list[AgentRecord]:
        """By name; retired names only when asked."""
        t = agents
        query = t.select().where(t.c.tenant_id == tenant_id)
        if not retired:
            query = query.where(t.c.status == "active")
        if after is not None:
            query = query.where(t.c.name > after)
        query = query.order_by(t.c.name).limit(limit)
        return [record(AgentRecord, r) for r in self._conn.execute(query)]

    def point(self, tenant_id: str, name: str, version_id: str, at: datetime) -> None:
        """The name now has ``version_id`` as its latest (created, or re-activated when it
        was retired). Insert-or-ignore, then update: race-free on both dialects."""
        t = agents
        row = {
            "tenant_id": tenant_id, "name": name, "latest_version": version_id,
            "pinned_version": None, "status": "active", "created_at": at, "updated_at": at,
            "retired_at": None,
        }  # fmt: skip
        if not self._insert_new(self._conn, t, [row], ("tenant_id", "name")):
            self._conn.execute(
                t.update()
                .where(t.c.tenant_id == tenant_id, t.c.name == name)
                .values(latest_version=version_id, status="active", updated_at=at, retired_at=None)
            )

    def pin(self, tenant_id: str, name: str, version_id: str | None, at: datetime) -> bool:
        """Pin the name to a version (None: follow the latest again); False: no such name."""
        t = agents
        done = self._conn.execute(
            t.update()
            .where(t.c.tenant_id == tenant_id, t.c.name == name)
            .values(pinned_version=version_id, updated_at=at)
        )
        return done.rowcount == 1

    def retire(self, tenant_id: str, name: str, at: datetime) -> bool:
        """Active to retired; False when there is no active name."""
        t = agents
        done = self._conn.execute(
            t.update()
            .where(t.c.tenant_id == tenant_id, t.c.name == name, t.c.status == "active")
            .values(status="retired", retired_at=at, updated_at=at)
        )
        return done.rowcount == 1

    # -- versions ----------------------------------------------------------------------------

    def add_version(self, version: VersionRecord) -> bool:
        """False when the tenant has this version already (the same spec compiled again)."""
        return bool(
            self._insert_new(self._conn, agent_versions, [asdict(version)], ("tenant_id", "id"))
        )

    def version(self, tenant_id: str, version_id: str) -> VersionRecord | None:
        t = agent_versions
        row = self._conn.execute(
            t.select().where(t.c.tenant_id == tenant_id, t.c.id == version_id)
        ).first()
        return record(VersionRecord, row) if row else None

    def versions(
        self, tenant_id: str, name: str, limit: int, after: tuple[datetime, str] | None = None
    ) -> list[VersionRecord]:
        t = agent_versions
        query = t.select().where(t.c.tenant_id == tenant_id, t.c.name == name)
        query = newest_first(query, t, "created_at", after).limit(limit)
        return [record(VersionRecord, r) for r in self._conn.execute(query)]

    # -- runs --------------------------------------------------------------------------------

    def add_run(self, run: AgentRunRecord) -> None:
        self._conn.execute(agent_runs.insert().values(**asdict(run)))

    def run(self, tenant_id: str, run_id: str) -> AgentRunRecord | None:
        t = agent_runs
        row = self._conn.execute(
            t.select().where(t.c.tenant_id == tenant_id, t.c.id == run_id)
        ).first()
        return record(AgentRunRecord, row) if row else None

    def runs(
        self, tenant_id: str, limit: int, after: tuple[datetime, str] | None = None,
        agent_name: str | None = None,
    ) -> list[AgentRunRecord]:  # fmt: skip
        t = agent_runs
        query = t.select().where(t.c.tenant_id == tenant_id)
        if agent_name is not None:
            query = query.where(t.c.agent_name == agent_name)
        query = newest_first(query, t, "started_at", after).limit(limit)
        return [record(AgentRunRecord, r) for r in self._conn.execute(query)]

    def running(self, tenant_id: str, limit: int) -> int:
        """How many of the tenant's runs are running, counted up to ``limit``."""
        t = agent_runs
        ids = (
            sa.select(t.c.id)
            .where(t.c.tenant_id == tenant_id, t.c.status == "running")
            .limit(limit)
            .subquery()
        )
        return int(self._conn.execute(sa.select(sa.func.count()).select_from(ids)).scalar_one())

    def update_run(self, tenant_id: str, run_id: str, **values: Any) -> None:
        t = agent_runs
        self._conn.execute(
            t.update().where(t.c.tenant_id == tenant_id, t.c.id == run_id).values(**values)
        )

    def end_run(
        self, tenant_id: str, run_id: str, status: str, at: datetime, **values: Any
    ) -> bool:
        """Running to ``status``; False when it had ended already. Its pending approvals
        expire with it (decided by ``RUN_ENDED``), in the same transaction, and so do the
        steps that waited on them: an ended run executes nothing."""
        t = agent_runs
        done = self._conn.execute(
            t.update()
            .where(t.c.tenant_id == tenant_id, t.c.id == run_id, t.c.status == "running")
            .values(status=status, ended_at=at, **values)
        )
        if done.rowcount != 1:
            return False
        a = agent_approvals
        self._conn.execute(
            a.update()
            .where(a.c.tenant_id == tenant_id, a.c.run_id == run_id, a.c.status == "pending")
            .values(status="expired", decided_by=RUN_ENDED, decided_at=at)
        )
        s = agent_steps
        self._conn.execute(
            s.update()
            .where(
                s.c.tenant_id == tenant_id,
                s.c.run_id == run_id,
                s.c.status.in_(["awaiting_approval", "approved"]),  # not yet claimed to run
            )
            .values(status="expired", decided_by=RUN_ENDED, ended_at=at)
        )
        return True

    # -- steps -------------------------------------------------------------------------------

    def add_step(self, step: StepRecord) -> bool:
        """Once per (run, step, kind): a replayed activity adds nothing."""
        key = ("tenant_id", "run_id", "step", "kind")
        return bool(self._insert_new(self._conn, agent_steps, [asdict(step)], key))

    def step(self, tenant_id: str, step_id: str) -> StepRecord | None:
        t = agent_steps
        row = self._conn.execute(
            t.select().where(t.c.tenant_id == tenant_id, t.c.id == step_id)
        ).first()
        return record(StepRecord, row) if row else None

    def steps(self, tenant_id: str, run_id: str) -> list[StepRecord]:
        """In order: by step, the model's row before its tool row."""
        t = agent_steps
        query = (
            t.select()
            .where(t.c.tenant_id == tenant_id, t.c.run_id == run_id)
            .order_by(t.c.step, sa.case((t.c.kind == "model", 0), else_=1))
        )
        return [record(StepRecord, r) for r in self._conn.execute(query)]

    def update_step(
        self, tenant_id: str, step_id: str, expected: Collection[str], **values: Any
    ) -> bool:
        """Compare-and-set from one of ``expected`` statuses; False when it was not in one."""
        t = agent_steps
        done = self._conn.execute(
            t.update()
            .where(t.c.tenant_id == tenant_id, t.c.id == step_id, t.c.status.in_(list(expected)))
            .values(**values)
        )
        return done.rowcount == 1

    def claim_tool(self, tenant_id: str, run_id: str, step_id: str) -> bool:
        """An approved (or already claimed) tool step of ``run_id`` becomes ``executing`` in
        one statement, only while its run is running: a cancel that commits first leaves it
        expired, never run; one that commits after finds it executing and it finishes."""
        s, r = agent_steps, agent_runs
        running = (
            sa.select(r.c.id)
            .where(r.c.tenant_id == tenant_id, r.c.id == run_id, r.c.status == "running")
            .exists()
        )
        done = self._conn.execute(
            s.update()
            .where(
                s.c.tenant_id == tenant_id,
                s.c.id == step_id,
                s.c.run_id == run_id,
                s.c.status.in_(["approved", "executing"]),
                running,
            )
            .values(status="executing")
        )
        return done.rowcount == 1

    def add_cost(
        self, tenant_id: str, run_id: str, credits: float, steps: int | None = None
    ) -> None:
        """Adds to the run's spend (call once per step row, in the transaction that adds it)."""
        t = agent_runs
        values: dict[str, Any] = {"spent_credits": t.c.spent_credits + credits}
        if steps is not None:
            values["steps"] = sa.case((t.c.steps < steps, steps), else_=t.c.steps)
        self._conn.execute(
            t.update().where(t.c.tenant_id == tenant_id, t.c.id == run_id).values(**values)
        )

    # -- violations --------------------------------------------------------------------------

    def add_violation(self, violation: ViolationRecord) -> bool:
        key = ("tenant_id", "run_id", "step", "rule_type")
        return bool(self._insert_new(self._conn, agent_violations, [asdict(violation)], key))

    def violations(self, tenant_id: str, run_id: str) -> list[ViolationRecord]:
        t = agent_violations
        query = (
            t.select()
            .where(t.c.tenant_id == tenant_id, t.c.run_id == run_id)
            .order_by(t.c.step, t.c.id)
        )
        return [record(ViolationRecord, r) for r in self._conn.execute(query)]

    # -- approvals ---------------------------------------------------------------------------

    def add_approval(self, approval: AgentApprovalRecord) -> AgentApprovalRecord:
        """Once per step: a replayed request returns the approval the first one made."""
        self._insert_new(self._conn, agent_approvals, [asdict(approval)], ("tenant_id", "step_id"))
        found = self.approval_of_step(approval.tenant_id, approval.step_id)
        assert found is not None
        return found

    def approval(self, tenant_id: str, approval_id: str) -> AgentApprovalRecord | None:
        t = agent_approvals
        row = self._conn.execute(
            t.select().where(t.c.tenant_id == tenant_id, t.c.id == approval_id)
        ).first()
        return record(AgentApprovalRecord, row) if row else None

    def approval_of_step(self, tenant_id: str, step_id: str) -> AgentApprovalRecord | None:
        t = agent_approvals
        row = self._conn.execute(
            t.select().where(t.c.tenant_id == tenant_id, t.c.step_id == step_id)
        ).first()
        return record(AgentApprovalRecord, row) if row else None

    def approvals(
        self, tenant_id: str, status: str | None, limit: int,
        after: tuple[datetime, str] | None = None,
    ) -> list[AgentApprovalRecord]:  # fmt: skip
        t = agent_approvals
        query = t.select().where(t.c.tenant_id == tenant_id)
        if status is not None:
            query = query.where(t.c.status == status)
        query = newest_first(query, t, "requested_at", after).limit(limit)
        return [record(AgentApprovalRecord, r) for r in self._conn.execute(query)]

    def run_approvals(self, tenant_id: str, run_id: str) -> list[AgentApprovalRecord]:
        """A run's requests in the order they were made (a run makes at most one per step)."""
        t = agent_approvals
        query = (
            t.select()
            .where(t.c.tenant_id == tenant_id, t.c.run_id == run_id)
            .order_by(t.c.requested_at, t.c.id)
        )
        return [record(AgentApprovalRecord, r) for r in self._conn.execute(query)]

    def decide(
        self, tenant_id: str, approval_id: str, status: str, by: str, at: datetime,
        note: str | None = None,
    ) -> bool:  # fmt: skip
        """Pending to ``status``; False when it was no longer pending."""
        t = agent_approvals
        done = self._conn.execute(
            t.update()
            .where(t.c.tenant_id == tenant_id, t.c.id == approval_id, t.c.status == "pending")
            .values(status=status, decided_by=by, decided_at=at, note=note)
        )
        return done.rowcount == 1
