"""The relational store: units of work, and what differs between SQLite and Azure SQL
under the repositories (``store/``)."""

from __future__ import annotations

from collections.abc import Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    import sqlalchemy as sa

    from hartonomous.admission.plans import PlanRepository
    from hartonomous.agents.store import AgentRepository
    from hartonomous.autonomy.store import AutonomyRepository
    from hartonomous.billing.billing_store import BillingRepository
    from hartonomous.billing.credits import CreditRepository
    from hartonomous.concepts.store import ConceptRepository
    from hartonomous.events.outbox import OutboxRepository
    from hartonomous.generation.answer_cache import AnswerCacheRepository
    from hartonomous.generation.lineage import LineageRepository
    from hartonomous.generation.store import ReceiptRepository
    from hartonomous.knowledge.associations import AssociationRepository
    from hartonomous.knowledge.store import KnowledgeRepository
    from hartonomous.metering.ledger import UsageRepository
    from hartonomous.models.store import ModelRepository
    from hartonomous.store.repositories import (
        ApiKeyRepository,
        AtomRepository,
        BlobRepository,
        TenantRepository,
        WorkflowRunRepository,
    )
    from hartonomous.store.upload_sessions import UploadSessionRepository
    from hartonomous.store.workflow_failures import WorkflowFailureRepository


class UnitOfWork(Protocol):
    """One transaction with the repositories bound to it: leaving the block without
    ``commit()`` rolls back. The adapter is ``store/unit_of_work.py`` (SQLite, Azure SQL)."""

    tenants: TenantRepository
    api_keys: ApiKeyRepository
    blobs: BlobRepository
    atoms: AtomRepository
    workflow_runs: WorkflowRunRepository
    knowledge: KnowledgeRepository
    models: ModelRepository
    receipts: ReceiptRepository
    lineage: LineageRepository
    usage: UsageRepository
    outbox: OutboxRepository
    upload_sessions: UploadSessionRepository
    autonomy: AutonomyRepository
    associations: AssociationRepository
    answer_cache: AnswerCacheRepository
    workflow_failures: WorkflowFailureRepository
    agents: AgentRepository
    plans: PlanRepository
    credits: CreditRepository
    billing: BillingRepository
    concepts: ConceptRepository

    def __enter__(self) -> UnitOfWork: ...

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...

    def commit(self) -> None: ...


class UnitOfWorkFactory(Protocol):
    """What services hold: a new unit of work per call, scoped to a tenant when known (on
    Azure SQL the tenant feeds row-level security)."""

    def __call__(self, *, write: bool, tenant_id: str | None = None) -> UnitOfWork: ...


class InsertOrIgnore(Protocol):
    """Insert the rows whose unique ``key`` is not held yet, in the caller's transaction;
    returns how many were added. One statement on SQLite (ON CONFLICT DO NOTHING); a look
    and a savepointed insert on Azure SQL (``store/upsert.py``)."""

    def __call__(
        self, conn: sa.Connection, table: sa.Table, rows: Sequence[dict[str, Any]],
        key: Sequence[str],
    ) -> int: ...  # fmt: skip


class SessionSetup(Protocol):
    """What a connection needs at the start of each unit of work: nothing on SQLite, the
    tenant in SESSION_CONTEXT for row-level security on Azure SQL (``store/dialects.py``)."""

    def __call__(self, conn: sa.Connection, tenant_id: str | None) -> None: ...
