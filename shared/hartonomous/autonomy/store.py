"""The loop's tables (``uow.autonomy``): policies, runs, the phase audit, actions, approvals
and dead letters. Every method scopes by tenant; state changes are compare-and-set, so a
replayed activity or a late decision changes nothing twice."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import asdict
from datetime import datetime
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from hartonomous.autonomy.records import (
    ActionRecord,
    ApprovalRecord,
    DeadLetterRecord,
    PhaseRecord,
    RunRecord,
)
from hartonomous.autonomy.types import DeadLetterStatus
from hartonomous.store.repositories import WriteConflict
from hartonomous.store.rows import newest_first, record
from hartonomous.store.schema import (
    autonomy_actions,
    autonomy_approvals,
    autonomy_dead_letters,
    autonomy_phases,
    autonomy_policies,
    autonomy_runs,
)

if TYPE_CHECKING:
    from hartonomous.ports import InsertOrIgnore

RUN_ENDED = "run-ended"  # the decider of approvals a run's end expired


class AutonomyRepository:
    PHASE_KEY = ("tenant_id", "run_id", "iteration", "phase")

    def __init__(self, conn: sa.Connection, insert_or_ignore: InsertOrIgnore) -> None:
        self._conn = conn
        self._insert_new = insert_or_ignore

    # -- policy ------------------------------------------------------------------------------

    def policy(self, tenant_id: str) -> dict[str, Any] | None:
        t = autonomy_policies
        body = self._conn.execute(
            sa.select(t.c.body).where(t.c.tenant_id == tenant_id)
        ).scalar_one_or_none()
        return dict(body) if body is not None else None

    def put_policy(
        self, tenant_id: str, body: dict[str, Any], by: str | None, at: datetime
    ) -> None:
        """Insert-or-ignore, then update: race-free on both dialects (two first PUTs of one
        tenant cannot both insert; the second updates instead of breaking the key)."""
        t = autonomy_policies
        values = {"body": body, "updated_at": at, "updated_by": by}
        row = {"tenant_id": tenant_id, **values}
        if not self._insert_new(self._conn, t, [row], ("tenant_id",)):
            self._conn.execute(t.update().where(t.c.tenant_id == tenant_id).values(**values))

    # -- runs --------------------------------------------------------------------------------

    def add_run(self, run: RunRecord) -> None:
        """Insert an active run; ``WriteConflict`` when the tenant already has one."""
        values = asdict(run)
        values["active_tenant"] = run.tenant_id if run.status == "running" else None
        try:
            with self._conn.begin_nested():
                self._conn.execute(autonomy_runs.insert().values(**values))
        except sa.exc.IntegrityError as exc:
            raise WriteConflict(f"tenant {run.tenant_id} has an active run") from exc

    def run(self, tenant_id: str, run_id: str) -> RunRecord | None:
        t = autonomy_runs
        row = self._conn.execute(
            t.select().where(t.c.tenant_id == tenant_id, t.c.id == run_id)
        ).first()
        return record(RunRecord, row) if row else None

    def active_run(self, tenant_id: str) -> RunRecord | None:
        t = autonomy_runs
        row = self._conn.execute(t.select().where(t.c.active_tenant == tenant_id)).first()
        return record(RunRecord, row) if row else None

    def runs(
        self, tenant_id: str, limit: int, after: tuple[datetime, str] | None = None
    ) -> list[RunRecord]:
        t = autonomy_runs
        query = newest_first(t.select().where(t.c.tenant_id == tenant_id), t, "started_at", after)
        return [record(RunRecord, r) for r in self._conn.execute(query.limit(limit))]

    def update_run(self, tenant_id: str, run_id: str, **values: Any) -> None:
        t = autonomy_runs
        self._conn.execute(
            t.update().where(t.c.tenant_id == tenant_id, t.c.id == run_id).values(**values)
        )

    def end_run(
        self,
        tenant_id: str,
        run_id: str,
        status: str,
        at: datetime,
        *,
        summary: dict[str, Any] | None = None,
        error: str | None = None,
    ) -> bool:
        """Active to ``status`` (frees the tenant's slot); False when it had ended already.
        Its pending approvals expire with it (decided by ``RUN_ENDED``, their actions
        expired), in the same transaction: an ended run executes nothing, so no decision on
        them may be taken as if it would."""
        t = autonomy_runs
        done = self._conn.execute(
            t.update()
            .where(t.c.tenant_id == tenant_id, t.c.id == run_id, t.c.status == "running")
            .values(status=status, active_tenant=None, ended_at=at, summary=summary, error=error)
        )
        if done.rowcount != 1:
            return False
        a = autonomy_approvals
        self._conn.execute(
            a.update()
            .where(a.c.tenant_id == tenant_id, a.c.run_id == run_id, a.c.status == "pending")
            .values(status="expired", decided_by=RUN_ENDED, decided_at=at)
        )
        x = autonomy_actions
        self._conn.execute(
            x.update()
            .where(
                x.c.tenant_id == tenant_id,
                x.c.run_id == run_id,
                x.c.status == "awaiting_approval",
            )
            .values(status="expired", decided_by=RUN_ENDED, updated_at=at)
        )
        return True

    # -- the audit ---------------------------------------------------------------------------

    def record_phase(self, phase: PhaseRecord) -> bool:
        """One row per (run, iteration, phase); a replay adds nothing. The phase's cost is
        added to the run's spend in the same transaction, once."""
        added = self._insert_new(self._conn, autonomy_phases, [asdict(phase)], self.PHASE_KEY)
        if added and phase.cost_credits:
            t = autonomy_runs
            self._conn.execute(
                t.update()
                .where(t.c.tenant_id == phase.tenant_id, t.c.id == phase.run_id)
                .values(spent_credits=t.c.spent_credits + phase.cost_credits)
            )
        return bool(added)

    def phase(self, tenant_id: str, run_id: str, iteration: int, name: str) -> PhaseRecord | None:
        t = autonomy_phases
        row = self._conn.execute(
            t.select().where(
                t.c.tenant_id == tenant_id,
                t.c.run_id == run_id,
                t.c.iteration == iteration,
                t.c.phase == name,
            )
        ).first()
        return record(PhaseRecord, row) if row else None

    def phases(self, tenant_id: str, run_id: str) -> list[PhaseRecord]:
        t = autonomy_phases
        query = (
            t.select()
            .where(t.c.tenant_id == tenant_id, t.c.run_id == run_id)
            .order_by(t.c.iteration, t.c.id)
        )
        return [record(PhaseRecord, r) for r in self._conn.execute(query)]

    # -- actions -----------------------------------------------------------------------------

    def add_actions(self, actions: Sequence[ActionRecord]) -> int:
        """Insert those not there yet (a replayed Hypothesize adds nothing)."""
        return self._insert_new(self._conn, autonomy_actions, [asdict(a) for a in actions], ("id",))

    def action(self, tenant_id: str, action_id: str) -> ActionRecord | None:
        t = autonomy_actions
        row = self._conn.execute(
            t.select().where(t.c.tenant_id == tenant_id, t.c.id == action_id)
        ).first()
        return record(ActionRecord, row) if row else None

    def actions(
        self, tenant_id: str, *, run_id: str | None = None, name: str | None = None,
        statuses: Collection[str] | None = None, limit: int = 1000,
    ) -> list[ActionRecord]:  # fmt: skip
        t = autonomy_actions
        query = t.select().where(t.c.tenant_id == tenant_id)
        if run_id is not None:
            query = query.where(t.c.run_id == run_id)
        if name is not None:
            query = query.where(t.c.name == name)
        if statuses is not None:
            query = query.where(t.c.status.in_(list(statuses)))
        query = query.order_by(t.c.created_at, t.c.id).limit(limit)
        return [record(ActionRecord, r) for r in self._conn.execute(query)]

    def transition(
        self, tenant_id: str, action_id: str, from_statuses: Collection[str], to_status: str,
        at: datetime, **values: Any,
    ) -> bool:  # fmt: skip
        """Compare-and-set the action's status; False when it was not in ``from_statuses``."""
        t = autonomy_actions
        done = self._conn.execute(
            t.update()
            .where(
                t.c.tenant_id == tenant_id,
                t.c.id == action_id,
                t.c.status.in_(list(from_statuses)),
            )
            .values(status=to_status, updated_at=at, **values)
        )
        return done.rowcount == 1

    def update_action(self, tenant_id: str, action_id: str, at: datetime, **values: Any) -> None:
        t = autonomy_actions
        self._conn.execute(
            t.update()
            .where(t.c.tenant_id == tenant_id, t.c.id == action_id)
            .values(updated_at=at, **values)
        )

    # -- approvals ---------------------------------------------------------------------------

    def add_approval(self, approval: ApprovalRecord) -> bool:
        return bool(self._insert_new(self._conn, autonomy_approvals, [asdict(approval)], ("id",)))

    def approval(self, tenant_id: str, approval_id: str) -> ApprovalRecord | None:
        t = autonomy_approvals
        row = self._conn.execute(
            t.select().where(t.c.tenant_id == tenant_id, t.c.id == approval_id)
        ).first()
        return record(ApprovalRecord, row) if row else None

    def approval_for_action(self, tenant_id: str, action_id: str) -> ApprovalRecord | None:
        t = autonomy_approvals
        row = self._conn.execute(
            t.select().where(t.c.tenant_id == tenant_id, t.c.action_id == action_id)
        ).first()
        return record(ApprovalRecord, row) if row else None

    def pending_until(self, tenant_id: str, run_id: str) -> datetime | None:
        """When the run's last pending approval expires (None: it waits for none)."""
        t = autonomy_approvals
        return self._conn.execute(  # type: ignore[no-any-return]
            sa.select(sa.func.max(t.c.expires_at)).where(
                t.c.tenant_id == tenant_id, t.c.run_id == run_id, t.c.status == "pending"
            )
        ).scalar_one()

    def approvals(
        self, tenant_id: str, status: str | None, limit: int,
        after: tuple[datetime, str] | None = None,
    ) -> list[ApprovalRecord]:  # fmt: skip
        t = autonomy_approvals
        query = t.select().where(t.c.tenant_id == tenant_id)
        if status is not None:
            query = query.where(t.c.status == status)
        query = newest_first(query, t, "requested_at", after).limit(limit)
        return [record(ApprovalRecord, r) for r in self._conn.execute(query)]

    def decide(
        self, tenant_id: str, approval_id: str, status: str, by: str, at: datetime,
        note: str | None = None,
    ) -> bool:  # fmt: skip
        """Pending to ``status``; False when it was no longer pending."""
        t = autonomy_approvals
        done = self._conn.execute(
            t.update()
            .where(t.c.tenant_id == tenant_id, t.c.id == approval_id, t.c.status == "pending")
            .values(status=status, decided_by=by, decided_at=at, note=note)
        )
        return done.rowcount == 1

    # -- dead letters ------------------------------------------------------------------------

    def park(self, letter: DeadLetterRecord) -> bool:
        """Park an action: inserted once per action; later, only a letter being retried
        (``retrying``: its retry failed or was refused) is parked again with the retry's
        attempts added. A replayed park changes nothing (it doubled the attempts, and could
        park a letter back while its retry ran)."""
        added = self._insert_new(
            self._conn, autonomy_dead_letters, [asdict(letter)], ("tenant_id", "action_id")
        )
        if not added:
            t = autonomy_dead_letters
            self._conn.execute(
                t.update()
                .where(
                    t.c.tenant_id == letter.tenant_id,
                    t.c.action_id == letter.action_id,
                    t.c.status == DeadLetterStatus.RETRYING,
                )
                .values(
                    status=letter.status,
                    error=letter.error,
                    attempts=t.c.attempts + letter.attempts,
                    updated_at=letter.updated_at,
                )
            )
        return bool(added)

    def dead_letter(self, tenant_id: str, letter_id: str) -> DeadLetterRecord | None:
        t = autonomy_dead_letters
        row = self._conn.execute(
            t.select().where(t.c.tenant_id == tenant_id, t.c.id == letter_id)
        ).first()
        return record(DeadLetterRecord, row) if row else None

    def dead_letters(
        self, tenant_id: str, status: str | None, limit: int,
        after: tuple[datetime, str] | None = None,
    ) -> list[DeadLetterRecord]:  # fmt: skip
        t = autonomy_dead_letters
        query = t.select().where(t.c.tenant_id == tenant_id)
        if status is not None:
            query = query.where(t.c.status == status)
        query = newest_first(query, t, "created_at", after).limit(limit)
        return [record(DeadLetterRecord, r) for r in self._conn.execute(query)]

    def transition_dead_letter(
        self, tenant_id: str, letter_id: str, from_statuses: Collection[str], to_status: str,
        at: datetime, by: str | None = None, *, updated_at: datetime | None = None,
    ) -> bool:  # fmt: skip
        """Compare-and-set the status (and, given ``updated_at``, that the row was not
        touched since: a retry claimed again meanwhile is a different claim)."""
        t = autonomy_dead_letters
        query = t.update().where(
            t.c.tenant_id == tenant_id,
            t.c.id == letter_id,
            t.c.status.in_(list(from_statuses)),
        )
        if updated_at is not None:
            query = query.where(t.c.updated_at == updated_at)
        done = self._conn.execute(query.values(status=to_status, updated_at=at, resolved_by=by))
        return done.rowcount == 1
