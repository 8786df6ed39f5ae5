"""The one place where adapters are chosen and wired: settings in, a ``Platform`` out.

Nothing here runs at import time; Azure Functions indexes ``function_app`` on every cold
start, so the platform is built on the first request instead.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from functools import partial
from typing import TYPE_CHECKING, Any

from hartonomous.admission.memory import MemoryState
from hartonomous.admission.plans import PlanBook, default_plan
from hartonomous.admission.service import AdmissionService
from hartonomous.agents.capabilities import CapabilityService
from hartonomous.agents.runs import AgentRunService
from hartonomous.agents.service import AgentService
from hartonomous.autonomy.service import AutonomyService
from hartonomous.billing.money import CreditTerms, to_micros
from hartonomous.billing.payments_service import PaymentService
from hartonomous.billing.service import CreditService
from hartonomous.blobs.local import LocalBlobStore
from hartonomous.blobs.upload_staging import AzureUploadStaging, LocalUploadStaging
from hartonomous.concepts.assignment import ConceptAssigner
from hartonomous.concepts.discovery import ConceptDiscovery
from hartonomous.concepts.service import ConceptService
from hartonomous.events.outbox import EventPublisher, LocalEventBus, OutboxRelay
from hartonomous.generation.provenance import ProvenanceService
from hartonomous.generation.queue import shape as queue_shape
from hartonomous.generation.service import GenerationService
from hartonomous.inference.model_files import ModelFiles, builtin_model
from hartonomous.inference.provider import InferenceProvider
from hartonomous.inference.types import Inference
from hartonomous.knowledge.embeddings import Embedder
from hartonomous.knowledge.gaps import GapService
from hartonomous.knowledge.keyword_sqlite import QUERY_TERM_TABLES, Fts5KeywordIndex
from hartonomous.knowledge.runtime import KnowledgeProvider
from hartonomous.metering.usage import UsageService
from hartonomous.models.service import ModelService
from hartonomous.ports import BlobStore, Payments, UploadStaging, VectorSearch
from hartonomous.services.atoms import AtomService
from hartonomous.services.blob_lifecycle import BlobLifecycle
from hartonomous.services.tenants import TenantService
from hartonomous.services.upload_sessions import UploadSessionService
from hartonomous.services.workflows import WorkflowService
from hartonomous.settings import Settings
from hartonomous.store import migrate
from hartonomous.store.dialects import (
    StoreAdapters,
    no_session_setup,
    tenant_session_context,
)
from hartonomous.store.engine import Engines, create_engines
from hartonomous.store.unit_of_work import UnitOfWork, UnitOfWorkFactory
from hartonomous.store.upsert import PortableInsertOrIgnore, SqliteInsertOrIgnore
from hartonomous.workflows.runtime import LocalWorkflowRuntime

if TYPE_CHECKING:
    from hartonomous.agents.activities import AgentActivities
    from hartonomous.autonomy.actions.base import ActionExecutor
    from hartonomous.autonomy.activities import LoopActivities

log = logging.getLogger(__name__)


@dataclass
class Platform:
    settings: Settings
    engines: Engines
    blobs: BlobStore
    uow_factory: UnitOfWorkFactory
    atoms: AtomService
    knowledge: KnowledgeProvider
    models: ModelService
    inference: InferenceProvider
    generation: GenerationService
    events: LocalEventBus
    outbox: OutboxRelay
    admission: AdmissionService
    payment_provider: Payments | None = None  # Stripe when its settings are given
    # Shared with ingestion, which assigns new chunks to concepts as it indexes them.
    concept_assigner: ConceptAssigner = field(default_factory=ConceptAssigner)
    # Only in the local world: on Azure the Durable extension runs workflows and timers.
    workflows: LocalWorkflowRuntime | None = None
    _running: bool = False
    _collection: threading.Thread | None = None
    # Services over the unit of work alone (no adapter to choose): routes call these, never
    # the unit of work itself.
    tenants: TenantService = field(init=False)
    tenant_workflows: WorkflowService = field(init=False)
    provenance: ProvenanceService = field(init=False)
    usage: UsageService = field(init=False)
    credits: CreditService = field(init=False)
    concepts: ConceptService = field(init=False)
    payments: PaymentService = field(init=False)
    gaps: GapService = field(init=False)
    uploads: UploadSessionService = field(init=False)
    autonomy: AutonomyService = field(init=False)
    capabilities: CapabilityService = field(init=False)
    agents: AgentService = field(init=False)
    agent_runs: AgentRunService = field(init=False)
    _autonomy_loop: LoopActivities | None = field(default=None, init=False, repr=False)
    _agent_activities: AgentActivities | None = field(default=None, init=False, repr=False)
    _autonomy_lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    def __post_init__(self) -> None:
        self.tenants = TenantService(self.uow_factory)
        self.tenant_workflows = WorkflowService(self.uow_factory)
        self.provenance = ProvenanceService(self.uow_factory)
        self.usage = UsageService(self.uow_factory)
        self.credits = CreditService(
            self.uow_factory, hold_ttl=timedelta(seconds=self.settings.billing_hold_ttl_s)
        )
        self.payments = PaymentService(
            self.uow_factory,
            self.payment_provider,
            cents_per_credit=self.settings.billing_cents_per_credit,
            currency=self.settings.billing_currency,
            top_up_min=self.settings.billing_top_up_min_credits,
            top_up_max=self.settings.billing_top_up_max_credits,
        )
        model = lambda: self.knowledge.get().embedder.model_name  # noqa: E731
        self.concepts = ConceptService(
            self.uow_factory,
            self.tenant_workflows,
            ConceptDiscovery(
                self.uow_factory,
                self.atoms,
                self.concept_assigner,
                model,
                self.settings.concepts_max_chunks,
            ),
            model,
            self.credits.require,
            self.settings.concepts_max_chunks,
        )
        self.gaps = GapService(self.uow_factory, lambda: self.knowledge.get().search.writes.flush())
        self.uploads = UploadSessionService(
            self.uow_factory,
            self.atoms,
            upload_staging_for(self.blobs),
            max_bytes=self.settings.max_session_upload_bytes,
            max_document_bytes=self.settings.max_document_bytes,
            ttl=timedelta(seconds=self.settings.upload_session_ttl_s),
        )
        self.autonomy = AutonomyService(
            self.uow_factory, retry_first_ms=self.settings.autonomy_retry_first_ms
        )
        self.capabilities = CapabilityService(self.uow_factory, self.knowledge.get)
        self.agents = AgentService(self.uow_factory, self.generation.resolve, self.autonomy.policy)
        self.agent_runs = AgentRunService(
            self.uow_factory,
            resolve_model=self.generation.resolve,
            current_version=self.agents.current_version,
            retry_first_ms=self.settings.autonomy_retry_first_ms,
            max_active_runs=self.settings.agent_max_active_runs,
        )

    def autonomy_loop(self) -> LoopActivities:
        """The loop's activities, built on first use (its executors and search need the
        embedding model, which loads lazily)."""
        from hartonomous.autonomy.activities import LoopActivities

        with self._autonomy_lock:
            if self._autonomy_loop is None:
                executors = autonomy_executors(self)
                self._autonomy_loop = LoopActivities(
                    uow_factory=self.uow_factory,
                    policy=self.autonomy.policy,
                    create_run=self.autonomy.create_run,
                    executors=executors,
                    search=lambda: self.knowledge.get().search,
                    inference=self.inference.get,
                    model=builtin_model,
                )
            return self._autonomy_loop

    def agent_activities(self) -> AgentActivities:
        """An agent run's activities, built on first use (search loads the embedder)."""
        from hartonomous.agents.activities import AgentActivities
        from hartonomous.agents.tools import AgentTools

        with self._autonomy_lock:
            if self._agent_activities is None:
                search = lambda: self.knowledge.get().search  # noqa: E731
                self._agent_activities = AgentActivities(
                    uow_factory=self.uow_factory,
                    atoms=self.atoms,
                    generation=self.generation,
                    search=search,
                    inference=self.inference.get,
                    tools=AgentTools(self.uow_factory, self.atoms, search),
                    policy=self.autonomy.policy,
                )
            return self._agent_activities

    def start_background(self) -> None:
        """Start the outbox relay, and the local workflow host and timer triggers. The local
        world also collects blobs once at start-up (bytes of atoms deleted before the last
        stop would otherwise wait for the first 5-minute tick); on Azure the timer alone
        does, since ``run_on_startup`` would fire on every scale-out instance."""
        if not self._running:
            self.outbox.start()
            if self.workflows is not None:
                self.workflows.start()
                self._collection = threading.Thread(
                    target=self._collect_blobs, name="blob-collection-at-start", daemon=True
                )
                self._collection.start()
            self._running = True

    def _collect_blobs(self) -> None:
        try:
            report = BlobLifecycle(self.uow_factory, self.blobs).sweep()
            log.info("blob collection at start-up: %s", report)
        except Exception:  # the timer tries again in 5 minutes
            log.exception("blob collection at start-up failed")

    def stop_background(self) -> None:
        if self._running:
            if self._collection is not None:
                self._collection.join(timeout=30)
                self._collection = None
            if self.workflows is not None:
                self.workflows.stop()
            self.outbox.stop()
            self._running = False
        self.knowledge.flush()  # queued usage and gap rows are written before shutdown

    def close(self) -> None:
        self.stop_background()
        self.knowledge.close()
        self.admission.close()
        self.generation.close()
        self.engines.dispose()


def autonomy_executors(platform: Platform) -> Callable[[], Mapping[str, ActionExecutor]]:
    """The registry's executors over the platform's services, built once on first use."""
    built: list[Mapping[str, ActionExecutor]] = []
    lock = threading.Lock()

    def get() -> Mapping[str, ActionExecutor]:
        from hartonomous.autonomy.actions import build_executors

        with lock:
            if not built:
                built.append(
                    build_executors(
                        platform.uow_factory,
                        platform.atoms,
                        lambda: platform.knowledge.get().search,
                        lambda: platform.knowledge.get().embedder,
                        lambda: platform.generation,
                        lambda: platform.concepts,
                        platform.settings.autonomy_max_associations,
                    )
                )
            return built[0]

    return get


def store_adapters_for(dialect: str) -> StoreAdapters:
    """What differs between SQLite and Azure SQL under the repositories."""
    if dialect == "mssql":
        from hartonomous.knowledge.keyword_mssql import FullTextKeywordIndex

        return StoreAdapters(
            tenant_session_context, PortableInsertOrIgnore(), FullTextKeywordIndex()
        )
    return StoreAdapters(no_session_setup, SqliteInsertOrIgnore(), Fts5KeywordIndex())


def embedder_factory(settings: Settings) -> Callable[[], Embedder]:
    """MiniLM in process, or the GPU worker's when ``embedding_url`` is set; called on first
    use, so torch never loads at start-up."""

    def build() -> Embedder:
        if settings.embedding_url:
            from hartonomous.inference.openai_http import WorkerEmbedder

            key = settings.worker_key.get_secret_value() if settings.worker_key else None
            return WorkerEmbedder(settings.embedding_url, key)
        from hartonomous.knowledge.embeddings import MiniLMEmbedder

        return MiniLMEmbedder(precision=settings.embedding_precision)

    return build


def vector_index_factory(
    settings: Settings, dialect: str, uow_factory: UnitOfWorkFactory
) -> Callable[[Embedder], VectorSearch]:
    """In Azure SQL on Azure SQL (no per-instance matrices); in memory on SQLite."""

    def build(embedder: Embedder) -> VectorSearch:
        if dialect == "mssql":
            from hartonomous.knowledge.sql_vectors import SqlVectorIndex

            return SqlVectorIndex(
                uow_factory,
                embedder.model_name,
                embedder.dimension,
                exact_below=settings.vector_ann_threshold or 2**31 - 1,
            )
        from hartonomous.knowledge.vectors import VectorIndex

        return VectorIndex(
            uow_factory,
            embedder.model_name,
            embedder.dimension,
            ann_threshold=settings.vector_ann_threshold,
        )

    return build


def inference_factory(settings: Settings, files: ModelFiles) -> Callable[[], Inference]:
    """llama.cpp in process by default, the GPU worker over HTTP when ``inference_url`` is
    set; called on first use, so llama.cpp never loads at start-up."""

    def build() -> Inference:
        if settings.inference_url:
            from hartonomous.inference.openai_http import WorkerInference

            key = settings.worker_key.get_secret_value() if settings.worker_key else None
            return WorkerInference(settings.inference_url, key)
        if settings.inference_engine == "llama-server":  # slots batch concurrent generations
            from hartonomous.inference.llama_server import LlamaServerEngine, ServerOptions

            return LlamaServerEngine(
                files,
                ServerOptions(
                    n_ctx=settings.inference_context_tokens,
                    slots=settings.inference_slots,
                    n_threads=settings.inference_threads,
                    n_threads_batch=settings.inference_batch_threads,
                    n_gpu_layers=settings.inference_gpu_layers,
                ),
            )
        from hartonomous.inference.llama_engine import EngineOptions, LlamaEngine

        return LlamaEngine(
            files,
            EngineOptions(
                n_ctx=settings.inference_context_tokens,
                n_threads=settings.inference_threads,
                n_gpu_layers=settings.inference_gpu_layers,
            ),
        )

    return build


def admission_for(settings: Settings, uow_factory: UnitOfWorkFactory) -> AdmissionService:
    """The limiters' state in this process, or in Redis (Azure Managed Redis) when
    ``redis_url`` is set: shared by every instance the Function App scales out to."""
    plans = PlanBook(uow_factory, default_plan(settings))
    if settings.redis_url is not None:
        from hartonomous.admission.redis_state import RedisState

        # Tokens reach Redis in batches of 16: one round trip per 16 generated tokens.
        return AdmissionService(
            plans, RedisState(settings.redis_url.get_secret_value()), flush_every=16
        )
    return AdmissionService(plans, MemoryState())


def payments_for(settings: Settings) -> Payments | None:
    """Stripe (or localstripe) when its key is set; otherwise payments are off."""
    if settings.stripe_api_key is None:
        return None
    from hartonomous.billing.stripe_payments import LocalstripePayments, StripePayments

    kind = LocalstripePayments if settings.stripe_flavor == "localstripe" else StripePayments
    secret = settings.stripe_webhook_secret
    return kind(
        settings.stripe_api_key.get_secret_value(),
        secret.get_secret_value() if secret is not None else None,
        api_base=settings.stripe_api_base,
    )


def blob_store_for(settings: Settings) -> BlobStore:
    if settings.blob_backend == "azure":
        from hartonomous.blobs.azure import AzureBlobStore

        if settings.azure_storage_connection_string is not None:
            return AzureBlobStore.from_connection_string(
                settings.azure_storage_connection_string.get_secret_value(),
                settings.blob_container,
            )
        assert settings.azure_storage_account_url is not None
        return AzureBlobStore.from_account_url(
            settings.azure_storage_account_url, settings.blob_container
        )
    return LocalBlobStore(settings.resolved_blob_dir)


def upload_staging_for(blobs: BlobStore) -> UploadStaging | None:
    """Upload sessions stage beside the blob store: same folder, or same account."""
    if isinstance(blobs, LocalBlobStore):
        return LocalUploadStaging(blobs)
    from hartonomous.blobs.azure import AzureBlobStore

    if isinstance(blobs, AzureBlobStore):
        return AzureUploadStaging(blobs)
    return None  # a store with no staging area: sessions answer 503


def bootstrap(
    settings: Settings | None = None,
    *,
    blobs: BlobStore | None = None,
    engines: Engines | None = None,
    run_migrations: bool | None = None,
    functions: Iterable[Any] | None = None,
    embedder: Embedder | None = None,
    inference: Inference | None = None,
    payments: Payments | None = None,
) -> Platform:
    """Build the platform; pass adapters to override the ones settings would pick.

    Migrations run by default on the embedded SQLite store only: Azure SQL is migrated by the
    deployment from ``sql/``, never by a cold start. ``functions`` (an indexed Function App's
    ``get_functions()``) gives the local world its workflow host and timer triggers.
    """
    settings = settings or Settings()
    engines = engines or create_engines(
        settings.resolved_database_url, sqlite_setup=QUERY_TERM_TABLES
    )
    if run_migrations if run_migrations is not None else engines.dialect == "sqlite":
        migrate.upgrade(engines)
    blobs = blobs or blob_store_for(settings)
    terms = CreditTerms(
        to_micros(settings.billing_starting_credits), settings.billing_starting_days
    )
    uow_factory: UnitOfWorkFactory = partial(
        UnitOfWork, engines, store_adapters_for(engines.dialect), terms=terms
    )
    atom_service = AtomService(
        uow_factory=uow_factory, blobs=blobs, max_upload_bytes=settings.max_upload_bytes
    )
    workflows = None
    if functions is not None:
        workflows = LocalWorkflowRuntime.build(
            engines, functions, activity_workers=settings.workflow_activity_workers
        )
    assigner = ConceptAssigner()
    knowledge = KnowledgeProvider(
        settings,
        uow_factory,
        atom_service,
        blobs,
        (lambda: embedder) if embedder is not None else embedder_factory(settings),
        vector_index_factory(settings, engines.dialect, uow_factory),
        on_indexed=assigner.assign_in,
    )
    models = ModelService(uow_factory, atom_service, blobs)
    files = ModelFiles(
        settings.resolved_model_cache_dir,
        read_parts=lambda tenant_id, model_id: models.read(
            models.ready_parts(tenant_id, model_id)[1]
        ),
    )
    inference_provider = InferenceProvider(
        files, (lambda: inference) if inference is not None else inference_factory(settings, files)
    )
    events = LocalEventBus()
    publisher: EventPublisher = events
    if settings.event_hubs_connection_string is not None:
        from hartonomous.events.event_hubs import EventHubsPublisher

        publisher = EventHubsPublisher.from_connection_string(
            settings.event_hubs_connection_string.get_secret_value(), settings.event_hub_name
        )
    outbox = OutboxRelay(uow_factory, publisher)
    return Platform(
        settings=settings,
        engines=engines,
        blobs=blobs,
        uow_factory=uow_factory,
        atoms=atom_service,
        knowledge=knowledge,
        models=models,
        inference=inference_provider,
        generation=GenerationService(
            uow_factory=uow_factory,
            atoms=atom_service,
            search=lambda: knowledge.get().search,
            inference=inference_provider.get,
            models=models,
            context_tokens=settings.inference_context_tokens,
            max_tokens=settings.generation_max_tokens,
            on_commit=outbox.notify,
            queue_depth=settings.generation_queue_depth,
            queue_shape=queue_shape(settings),
        ),
        events=events,
        outbox=outbox,
        admission=admission_for(settings, uow_factory),
        payment_provider=payments if payments is not None else payments_for(settings),
        concept_assigner=assigner,
        workflows=workflows,
    )
