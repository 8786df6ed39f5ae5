"""Unit of work: one transaction, the repositories bound to it, commit explicit.

Leaving the block without ``commit()`` rolls back, so an error half-way writes nothing.
What differs by database comes in ``StoreAdapters`` (chosen by ``bootstrap.py``): the session
setup (on Azure SQL the tenant goes into ``SESSION_CONTEXT`` for row-level security), the
keyword index, insert-or-ignore.
"""

from __future__ import annotations

from types import TracebackType

import sqlalchemy as sa

from hartonomous.admission.plans import PlanRepository
from hartonomous.agents.store import AgentRepository
from hartonomous.autonomy.store import AutonomyRepository
from hartonomous.billing.billing_store import BillingRepository
from hartonomous.billing.credits import CreditRepository
from hartonomous.billing.money import CreditTerms
from hartonomous.concepts.store import ConceptRepository
from hartonomous.events.outbox import OutboxRepository
from hartonomous.generation.answer_cache import AnswerCacheRepository
from hartonomous.generation.lineage import LineageRepository
from hartonomous.generation.store import ReceiptRepository
from hartonomous.knowledge.associations import AssociationRepository
from hartonomous.knowledge.store import KnowledgeRepository
from hartonomous.metering.ledger import UsageRepository
from hartonomous.models.store import ModelRepository
from hartonomous.ports import UnitOfWorkFactory as UnitOfWorkFactory  # the port, from here too
from hartonomous.store.dialects import StoreAdapters
from hartonomous.store.engine import Engines
from hartonomous.store.repositories import (
    ApiKeyRepository,
    AtomRepository,
    BlobRepository,
    TenantRepository,
    WorkflowRunRepository,
)
from hartonomous.store.upload_sessions import UploadSessionRepository
from hartonomous.store.workflow_failures import WorkflowFailureRepository


class UnitOfWork:
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

    def __init__(
        self,
        engines: Engines,
        adapters: StoreAdapters,
        *,
        write: bool,
        tenant_id: str | None = None,
        terms: CreditTerms | None = None,
    ) -> None:
        self._terms = terms or CreditTerms()
        self._engine = engines.write if write else engines.read
        self._adapters = adapters
        self._tenant_id = tenant_id
        self._conn: sa.Connection | None = None
        self._tx: sa.RootTransaction | None = None

    def __enter__(self) -> UnitOfWork:
        self._conn = self._engine.connect()
        self._tx = self._conn.begin()
        self._adapters.session(self._conn, self._tenant_id)
        self.tenants = TenantRepository(self._conn)
        self.api_keys = ApiKeyRepository(self._conn)
        self.blobs = BlobRepository(self._conn)
        self.atoms = AtomRepository(self._conn)
        self.workflow_runs = WorkflowRunRepository(self._conn)
        self.knowledge = KnowledgeRepository(self._conn, self._adapters.keywords)
        self.models = ModelRepository(self._conn)
        self.receipts = ReceiptRepository(self._conn)
        self.lineage = LineageRepository(self._conn)
        ignore = self._adapters.insert_or_ignore
        self.credits = CreditRepository(self._conn, ignore, self._terms)
        self.billing = BillingRepository(self._conn, ignore)
        self.usage = UsageRepository(self._conn, ignore, self.credits)
        self.outbox = OutboxRepository(self._conn)
        self.upload_sessions = UploadSessionRepository(self._conn)
        self.autonomy = AutonomyRepository(self._conn, ignore)
        self.associations = AssociationRepository(self._conn, ignore)
        self.answer_cache = AnswerCacheRepository(self._conn, ignore)
        self.workflow_failures = WorkflowFailureRepository(self._conn, ignore)
        self.agents = AgentRepository(self._conn, ignore)
        self.plans = PlanRepository(self._conn)
        self.concepts = ConceptRepository(self._conn)
        return self

    def commit(self) -> None:
        assert self._tx is not None, "commit outside the unit of work"
        self._tx.commit()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._conn is not None and self._tx is not None
        if self._tx.is_active:
            self._tx.rollback()
        self._conn.close()
