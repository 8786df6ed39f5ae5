"""Ports: the small Protocols the core needs from the outside world, all in this module.

Each has one adapter per world (``blobs/``, ``store/``, ``knowledge/``, ``inference/``,
``events/``, ``workflows/``); ``bootstrap.py`` is the one place that picks them. The value
types a port passes stay beside their code and are imported here for type checking only, so
importing a port never loads an adapter.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from datetime import datetime
from types import TracebackType
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    import sqlalchemy as sa
    from azure.durable_functions.models.DurableOrchestrationStatus import (
        DurableOrchestrationStatus,
    )
    from azure.durable_functions.models.PurgeHistoryResult import PurgeHistoryResult

    from hartonomous.events.outbox import Event, OutboxRepository
    from hartonomous.generation.lineage import LineageRepository
    from hartonomous.generation.store import ReceiptRepository
    from hartonomous.inference.types import Completion, CompletionRequest, ModelRef
    from hartonomous.knowledge.chunking import Tokenizer
    from hartonomous.knowledge.embeddings import Vectors
    from hartonomous.knowledge.store import ChunkHit, KnowledgeRepository, SearchFilter
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


class StagedBlob(Protocol):
    """Bytes fully written and hashed but not yet visible under their sha256."""

    @property
    def sha256(self) -> str: ...

    @property
    def size(self) -> int: ...

    def persist(self) -> None:
        """Make the staged bytes durable (fsync) now, outside any lock; ``publish`` does it
        otherwise. Callers skip it for bytes already held: those are only discarded."""

    def publish(self) -> None:
        """Make the bytes readable under ``sha256``; a no-op when they already are."""

    def discard(self) -> None:
        """Forget the staged bytes; safe to call twice or after ``publish``."""


class BlobWriter(Protocol):
    """A streaming write: bytes in, SHA-256 computed on the way, flat memory."""

    def write(self, data: bytes | bytearray | memoryview) -> None: ...

    def finish(self) -> StagedBlob: ...

    def abort(self) -> None: ...


class BlobStore(Protocol):
    """Content-addressed bytes: the key is the SHA-256 of the content, nothing else."""

    def writer(self) -> BlobWriter: ...

    def exists(self, sha256: str) -> bool: ...

    def read(self, sha256: str, start: int = 0, end: int | None = None) -> Iterator[bytes]:
        """Yield bytes ``[start, end)`` (``end=None``: to the end) in bounded chunks."""
        ...

    def delete(self, sha256: str) -> None:
        """Remove the bytes; no error when they are already gone."""

    def sweep_staging(self, before: datetime) -> int:
        """Delete staged writes last touched before ``before`` (left by crashed uploads)."""
        ...

    def journaled(self, before: datetime) -> list[tuple[str, str]]:
        """``(entry, sha256)`` of the publication journal written before ``before``: bytes
        that may have been published by a transaction that then failed (staged blobs write
        an entry before new bytes can become visible; ``services/blob_lifecycle.py``)."""
        ...

    def unjournal(self, entry: str) -> None:
        """Drop a journal entry once its bytes are referenced or collected."""


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


class Embedder(Protocol):
    """Text to vectors: MiniLM in process, or the GPU worker over HTTP."""

    model_name: str
    dimension: int

    @property
    def tokenizer(self) -> Tokenizer:
        """The model's own tokenizer: chunks are cut to its window."""
        ...

    def embed(self, texts: Sequence[str], *, spare_core: bool = False) -> Vectors:
        """(len(texts), dimension) float32, each row of unit length. ``spare_core``: the
        caller runs other work meanwhile (hybrid search's keyword query); leave it a core."""
        ...


class Inference(Protocol):
    """Completion by a model: in process (llama.cpp) or over HTTP (the GPU worker)."""

    def complete(self, model: ModelRef, request: CompletionRequest) -> Completion: ...

    def stream(self, model: ModelRef, request: CompletionRequest) -> Iterator[str | Completion]:
        """Text pieces as the model produces them, then one final ``Completion``."""
        ...


class WorkflowClient(Protocol):
    """The Durable client routes use: the SDK's ``DurableOrchestrationClient`` on Azure,
    ``LocalDurableClient`` here; both answer with the SDK's own status types."""

    async def start_new(
        self,
        orchestration_function_name: str,
        instance_id: str | None = None,
        client_input: Any | None = None,
    ) -> str: ...

    async def get_status(
        self,
        instance_id: str,
        show_history: bool = False,
        show_history_output: bool = False,
        show_input: bool = False,
    ) -> DurableOrchestrationStatus: ...

    async def raise_event(
        self, instance_id: str, event_name: str, event_data: Any = None
    ) -> None: ...

    async def terminate(self, instance_id: str, reason: str) -> None: ...

    async def purge_instance_history(self, instance_id: str) -> PurgeHistoryResult: ...


class EventPublisher(Protocol):
    """Where the outbox relay sends committed events: in-process subscribers, Event Hubs."""

    def publish(self, events: list[Event]) -> None:
        """Deliver the events (in order) or raise; raising leaves them pending."""


class UploadTarget(Protocol):
    """Where a client sends an upload session's bytes: ``method`` to ``url`` with ``headers``."""

    @property
    def url(self) -> str: ...

    @property
    def method(self) -> str: ...

    @property
    def headers(self) -> dict[str, str]: ...


class StagingWriter(Protocol):
    """Bytes in, flat memory; ``finish`` makes them the session's received bytes (replacing
    earlier ones), ``abort`` leaves no trace of this write."""

    def write(self, data: bytes | bytearray | memoryview) -> None: ...

    def finish(self) -> None: ...

    def abort(self) -> None: ...


class UploadStaging(Protocol):
    """Where upload sessions' bytes wait between the client and completion, beside the blob
    store (same account or folder, so publishing them is a copy or a rename, never a
    re-upload). Adapters: ``blobs/upload_staging.py``."""

    def direct_target(
        self, tenant_id: str, upload_id: str, size: int, expires_at: datetime
    ) -> UploadTarget | None:
        """A URL that takes the bytes without this app (a SAS on Azure), or None."""

    def writer(self, tenant_id: str, upload_id: str) -> StagingWriter:
        """A streamed write of the session's bytes through the app."""

    def received(self, tenant_id: str, upload_id: str) -> int | None:
        """Size of the bytes received (or already sealed) for the session; None: none yet."""

    def seal(self, tenant_id: str, upload_id: str) -> StagedBlob | None:
        """Move the received bytes out of the client's reach (or take up a seal a crashed
        completion left) and hash them, streamed; publishing the result makes them an
        object of the blob store. None when there are no bytes."""

    def discard(self, tenant_id: str, upload_id: str) -> None:
        """Delete whatever bytes the session has, received or sealed."""

    def sweep(self, live: Callable[[Sequence[str]], set[str]], before: datetime) -> int:
        """Delete staged bytes of sessions ``live`` does not name, and writes through the app
        untouched since ``before`` (a crashed PUT); the number of objects deleted."""


# -- search and the relational dialect (knowledge/, store/dialects.py) ----------------------


class KeywordIndex(Protocol):
    """Ranked keyword search over chunk text, kept beside the chunk rows in the same
    transaction: SQLite FTS5 (``knowledge/keyword_sqlite.py``), the Azure SQL full-text
    index (``knowledge/keyword_mssql.py``)."""

    def add(self, conn: sa.Connection, tenant_id: str, rows: Sequence[tuple[str, str]]) -> None:
        """Index ``(atom_id, text)`` rows of new chunks."""

    def remove(self, conn: sa.Connection, tenant_id: str, atom_id: str) -> None:
        """Forget a chunk that is being deleted."""

    def search(
        self,
        conn: sa.Connection,
        tenant_id: str,
        words: Sequence[str],
        limit: int,
        allowed: sa.Select[Any] | None = None,
    ) -> list[ChunkHit]:
        """The best ``limit`` chunks matching any word, best first (positive scores);
        ``allowed`` (a subquery of chunk atom ids) restricts them inside the query."""
        ...


class VectorSearch(Protocol):
    """Nearest chunks by cosine: in memory (``knowledge/vectors.py``), in Azure SQL
    (``knowledge/sql_vectors.py``)."""

    def refresh(self, tenant_id: str) -> int:
        """Catch up with rows indexed since the last look; how many arrived."""
        ...

    def search(
        self, tenant_id: str, query: Vectors, k: int, flt: SearchFilter | None = None
    ) -> list[tuple[str, float]]:
        """The k best (atom id, cosine) of the tenant; with a filter, the k best of the
        chunks it allows (never a filtered tenant-wide top k)."""
        ...


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
