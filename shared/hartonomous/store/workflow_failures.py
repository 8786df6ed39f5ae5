"""Workflows that failed, as their orchestrators recorded them (``uow.workflow_failures``).

The Durable backend cannot be asked for a tenant's failed instances from an activity (it
knows no tenants, and on Azure its history is not ours to scan), so each orchestrator
records its own failure through the ``workflow_record_failure`` activity before it re-raises:
the instance still ends Failed with its error. ``retry_failed_workflow`` re-runs what is
recorded here.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from hartonomous.store.schema import workflow_failures

if TYPE_CHECKING:
    from hartonomous.ports import InsertOrIgnore, UnitOfWorkFactory

RECORD_FAILURE = "workflow_record_failure"  # the activity orchestrators call as they fail
MAX_ERROR = 4000


@dataclass(frozen=True)
class WorkflowFailure:
    instance_id: str
    tenant_id: str
    name: str
    input: Any
    error: str
    failed_at: datetime
    retried_by: str | None


class WorkflowFailureRepository:
    def __init__(self, conn: sa.Connection, insert_or_ignore: InsertOrIgnore) -> None:
        self._conn = conn
        self._insert_new = insert_or_ignore

    def record(
        self, instance_id: str, tenant_id: str, name: str, input: Any, error: str, at: datetime
    ) -> bool:
        """Once per instance: a replayed activity adds nothing."""
        row = {"instance_id": instance_id, "tenant_id": tenant_id, "name": name,
               "input": input, "error": error[:MAX_ERROR], "failed_at": at}  # fmt: skip
        return bool(self._insert_new(self._conn, workflow_failures, [row], ("instance_id",)))

    def get(self, tenant_id: str, instance_id: str) -> WorkflowFailure | None:
        t = workflow_failures
        row = self._conn.execute(
            t.select().where(t.c.tenant_id == tenant_id, t.c.instance_id == instance_id)
        ).first()
        return _failure(row) if row else None

    def open(self, tenant_id: str, limit: int = 100) -> list[WorkflowFailure]:
        """Failures not retried yet, newest first."""
        t = workflow_failures
        query = (
            t.select()
            .where(t.c.tenant_id == tenant_id, t.c.retried_by.is_(None))
            .order_by(t.c.failed_at.desc(), t.c.instance_id.desc())
            .limit(limit)
        )
        return [_failure(r) for r in self._conn.execute(query)]

    def open_count(self, tenant_id: str) -> int:
        t = workflow_failures
        query = (
            sa.select(sa.func.count())
            .select_from(t)
            .where(t.c.tenant_id == tenant_id, t.c.retried_by.is_(None))
        )
        return int(self._conn.execute(query).scalar_one())

    def failed_retries(self, tenant_id: str) -> int:
        """Retries that failed in turn (a failure row whose instance is another's retry)."""
        t, retried = workflow_failures, workflow_failures.alias("retried")
        retries = sa.select(retried.c.retried_by).where(
            retried.c.tenant_id == tenant_id, retried.c.retried_by.is_not(None)
        )
        query = (
            sa.select(sa.func.count())
            .select_from(t)
            .where(t.c.tenant_id == tenant_id, t.c.instance_id.in_(retries))
        )
        return int(self._conn.execute(query).scalar_one())

    def mark_retried(self, tenant_id: str, instance_id: str, new_instance_id: str) -> bool:
        """Compare-and-set: False when it was retried already (by this or another retry)."""
        t = workflow_failures
        done = self._conn.execute(
            t.update()
            .where(
                t.c.tenant_id == tenant_id,
                t.c.instance_id == instance_id,
                t.c.retried_by.is_(None),
            )
            .values(retried_by=new_instance_id)
        )
        return done.rowcount == 1


def record_workflow_failure(
    uow_factory: UnitOfWorkFactory, failure: dict[str, Any], at: datetime
) -> bool:
    """The ``workflow_record_failure`` activity: ``{instance_id, name, tenant_id, input,
    error}`` from the failing orchestrator (the tenant from its own input)."""
    tenant_id = str(failure["tenant_id"])
    with uow_factory(write=True, tenant_id=tenant_id) as uow:
        added = uow.workflow_failures.record(
            str(failure["instance_id"]), tenant_id, str(failure["name"]),
            failure.get("input"), str(failure["error"]), at,
        )  # fmt: skip
        uow.commit()
    return added


def _failure(row: Any) -> WorkflowFailure:
    return WorkflowFailure(
        row.instance_id, row.tenant_id, row.name, row.input, row.error, row.failed_at,
        row.retried_by,
    )  # fmt: skip
