"""SQLAlchemy Core tables: the one source of the schema (Alembic migrations and ``sql/``).

Every tenant-owned table carries ``tenant_id``; on Azure SQL a row-level security policy
(``sql/rls.sql``) filters those tables by ``SESSION_CONTEXT('tenant_id')`` as a second wall
behind the queries, which scope by tenant themselves.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import numpy as np
import sqlalchemy as sa
from sqlalchemy.dialects import mssql
from sqlalchemy.engine import Dialect

metadata = sa.MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
    }
)


class UTCDateTime(sa.TypeDecorator[datetime]):
    """Aware UTC datetimes in and out; SQLite would otherwise drop the offset."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _id() -> sa.String:
    return sa.String(36)


def _json() -> Any:
    # JSON text both ways on both: SQLite's JSON column locally; on Azure SQL mssql.JSON, an
    # NVARCHAR(max) column whose bind and result processors serialize and parse (a plain
    # NVARCHAR variant would hand pyodbc a dict). tests/test_tsql_statements.py round-trips it.
    return sa.JSON().with_variant(mssql.JSON(), "mssql")


tenants = sa.Table(
    "tenants",
    metadata,
    sa.Column("id", _id(), primary_key=True),
    sa.Column("name", sa.String(100), nullable=False, unique=True),
    sa.Column("created_at", UTCDateTime(), nullable=False),
)

api_keys = sa.Table(
    "api_keys",
    metadata,
    sa.Column("id", _id(), primary_key=True),
    sa.Column("tenant_id", _id(), sa.ForeignKey("tenants.id"), nullable=False, index=True),
    sa.Column("key_hash", sa.String(64), nullable=False, unique=True),
    sa.Column("display_prefix", sa.String(16), nullable=False),
    sa.Column("scope", sa.String(16), nullable=False),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Column("revoked_at", UTCDateTime(), nullable=True),
)

# Bytes are shared across tenants (stored once); refcount counts the atoms of every tenant
# that use them, so deletion never needs to read other tenants' rows (which RLS would hide).
blobs = sa.Table(
    "blobs",
    metadata,
    sa.Column("sha256", sa.String(64), primary_key=True),
    sa.Column("size", sa.BigInteger(), nullable=False),
    sa.Column("refcount", sa.Integer(), nullable=False),
    sa.Column("created_at", UTCDateTime(), nullable=False),
)

atoms = sa.Table(
    "atoms",
    metadata,
    sa.Column("id", _id(), primary_key=True),
    sa.Column("tenant_id", _id(), sa.ForeignKey("tenants.id"), nullable=False),
    sa.Column("sha256", sa.String(64), sa.ForeignKey("blobs.sha256"), nullable=False),
    sa.Column("size", sa.BigInteger(), nullable=False),
    sa.Column("media_type", sa.String(255), nullable=False),
    sa.Column("modality", sa.String(32), nullable=False),
    sa.Column("metadata", _json(), nullable=False),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.UniqueConstraint("tenant_id", "sha256"),
    sa.Index(None, "tenant_id", "created_at", "id"),
    sa.Index(None, "tenant_id", "modality", "created_at"),
)

# Which tenant started which workflow instance: routes check it before they touch an
# instance, in both worlds (the Durable backend itself knows nothing of tenants).
workflow_runs = sa.Table(
    "workflow_runs",
    metadata,
    sa.Column("instance_id", sa.String(200), primary_key=True),
    sa.Column("tenant_id", _id(), sa.ForeignKey("tenants.id"), nullable=False),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Index(None, "tenant_id", "created_at"),
)

# --- The local Durable host's own storage (embedded mode only) ---------------------------
# On Azure the Durable backend (Durable Task Scheduler or Azure Storage) keeps instances and
# histories; these tables play that part on one machine. `local_only` keeps them out of the
# Azure SQL scripts in sql/.
LOCAL_ONLY = {"local_only": True}

durable_instances = sa.Table(
    "durable_instances",
    metadata,
    sa.Column("instance_id", sa.String(200), primary_key=True),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("execution_id", sa.String(36), nullable=False),
    sa.Column("runtime_status", sa.String(20), nullable=False),
    sa.Column("input", sa.Text(), nullable=True),
    sa.Column("output", sa.Text(), nullable=True),
    sa.Column("custom_status", sa.Text(), nullable=True),
    sa.Column("error", sa.Text(), nullable=True),
    sa.Column("parent_instance_id", sa.String(200), nullable=True),
    sa.Column("parent_event_id", sa.Integer(), nullable=True),
    sa.Column("parent_execution_id", sa.String(36), nullable=True),
    sa.Column("host_state", sa.Text(), nullable=False),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Column("last_updated_at", UTCDateTime(), nullable=False),
    sa.Index(None, "runtime_status"),
    info=LOCAL_ONLY,
)

durable_history = sa.Table(
    "durable_history",
    metadata,
    sa.Column("instance_id", sa.String(200), primary_key=True),
    sa.Column("seq", sa.Integer(), primary_key=True, autoincrement=False),
    sa.Column("event", sa.Text(), nullable=False),
    info=LOCAL_ONLY,
)

# Messages to orchestrators: starts, raised events, timers (visible at their fire time),
# sub-orchestration results, terminations. Written before they are acted on: none is lost.
durable_messages = sa.Table(
    "durable_messages",
    metadata,
    sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
    sa.Column("instance_id", sa.String(200), nullable=False),
    sa.Column("kind", sa.String(30), nullable=False),
    sa.Column("event_id", sa.Integer(), nullable=True),  # the timer a "timer" message fires
    sa.Column("payload", sa.Text(), nullable=False),
    sa.Column("visible_at", UTCDateTime(), nullable=False),
    sa.Index(None, "visible_at"),
    info=LOCAL_ONLY,
    sqlite_autoincrement=True,  # ids never reused: consumed messages are deleted by id
)

# Activities scheduled and not yet recorded as completed: re-run after a crash.
durable_work = sa.Table(
    "durable_work",
    metadata,
    sa.Column("instance_id", sa.String(200), primary_key=True),
    sa.Column("event_id", sa.Integer(), primary_key=True, autoincrement=False),
    sa.Column("execution_id", sa.String(36), nullable=False),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("input", sa.Text(), nullable=True),
    info=LOCAL_ONLY,
)


# --- Knowledge: documents, chunks, embeddings, the provenance graph ----------------------


class Vector(sa.TypeDecorator[bytes]):
    """float32 vectors: raw little-endian bytes locally, ``VECTOR(n)`` on Azure SQL.

    SQLAlchemy has no SQL Server VECTOR type; this one compiles to it (see ``_vector_ddl``),
    so the generated T-SQL has a real vector column that ``VECTOR_DISTANCE`` can use.
    """

    impl = sa.LargeBinary
    cache_ok = True

    def __init__(self, dimension: int) -> None:
        super().__init__()
        self.dimension = dimension

    def load_dialect_impl(self, dialect: Dialect) -> Any:
        if dialect.name == "mssql":
            return dialect.type_descriptor(_MssqlVector(self.dimension))
        return dialect.type_descriptor(sa.LargeBinary())

    # Azure SQL exchanges VECTOR values with ODBC drivers as JSON arrays of floats; the rest
    # of the platform always sees float32 bytes.
    def process_bind_param(self, value: bytes | None, dialect: Dialect) -> Any:
        if value is None or dialect.name != "mssql":
            return value
        return json.dumps(np.frombuffer(value, dtype=np.float32).tolist())

    def process_result_value(self, value: Any, dialect: Dialect) -> bytes | None:
        if value is None or dialect.name != "mssql" or isinstance(value, bytes):
            return value  # type: ignore[no-any-return]
        return np.asarray(json.loads(value), dtype=np.float32).tobytes()


class _MssqlVector(sa.types.UserDefinedType[bytes]):
    cache_ok = True

    def __init__(self, dimension: int) -> None:
        self.dimension = dimension

    def get_col_spec(self, **kw: Any) -> str:
        return f"VECTOR({self.dimension})"


EMBEDDING_DIMENSION = 384  # all-MiniLM-L6-v2; another model gets its own column or table

# Typed edges between a tenant's atoms: HAS_CHUNK (document -> chunk, with ordinal and
# character offsets); from generations USED_IN_GENERATION (retrieved chunk -> output, ordinal
# = rank), GENERATED (model card -> output), DERIVED_FROM (output -> prompt), each carrying
# its receipt: outputs are content-addressed, so one output atom may have many receipts.
# receipt_id is '' (not NULL) elsewhere, so the unique key holds on SQLite and SQL Server alike.
edges = sa.Table(
    "edges",
    metadata,
    sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
    sa.Column("tenant_id", _id(), sa.ForeignKey("tenants.id"), nullable=False),
    sa.Column("kind", sa.String(40), nullable=False),
    sa.Column("src_id", _id(), sa.ForeignKey("atoms.id"), nullable=False),
    sa.Column("dst_id", _id(), sa.ForeignKey("atoms.id"), nullable=False),
    sa.Column("ordinal", sa.Integer(), nullable=True),
    sa.Column("start_offset", sa.Integer(), nullable=True),
    sa.Column("end_offset", sa.Integer(), nullable=True),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Column("receipt_id", sa.String(36), nullable=False, server_default=""),
    # BELONGS_TO_CONCEPT: the member's cosine distance to its concept's centroid.
    sa.Column("weight", sa.Float(), nullable=True),
    sa.UniqueConstraint("tenant_id", "src_id", "kind", "ordinal", "receipt_id"),
    sa.Index(None, "tenant_id", "dst_id", "kind"),
    sa.Index(None, "tenant_id", "kind", "id"),  # a tenant's knowledge watermark (agents)
)

# The text of each chunk atom (also its bytes in the blob store), for search results and
# the keyword index (FTS5 locally, a full-text index on Azure SQL: sql/knowledge.sql).
chunks = sa.Table(
    "chunks",
    metadata,
    # seq orders chunks as they are indexed: vector indexes catch up with `seq > last seen`.
    sa.Column("seq", sa.Integer(), primary_key=True, autoincrement=True),
    sa.Column("atom_id", _id(), sa.ForeignKey("atoms.id"), nullable=False, unique=True),
    sa.Column("tenant_id", _id(), sa.ForeignKey("tenants.id"), nullable=False),
    sa.Column("sha256", sa.String(64), nullable=False),
    sa.Column("text", sa.UnicodeText(), nullable=False),
    sa.Column("token_count", sa.Integer(), nullable=False),
    sa.UniqueConstraint("tenant_id", "sha256"),
    sa.Index(None, "tenant_id", "seq"),  # vector indexes catch up by this
)

# Embeddings by content (tenant, sha256 of the chunk text, model): computed before the
# chunk atoms exist, reused by every document that contains the same chunk.
embeddings = sa.Table(
    "embeddings",
    metadata,
    sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
    sa.Column("tenant_id", _id(), sa.ForeignKey("tenants.id"), nullable=False),
    sa.Column("sha256", sa.String(64), nullable=False),
    sa.Column("model", sa.String(100), nullable=False),
    sa.Column("dimension", sa.Integer(), nullable=False),
    sa.Column("vector", Vector(EMBEDDING_DIMENSION), nullable=False),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.UniqueConstraint("tenant_id", "sha256", "model"),
)

# One row per indexed document atom: ingestion is idempotent by it.
documents = sa.Table(
    "documents",
    metadata,
    sa.Column("atom_id", _id(), sa.ForeignKey("atoms.id"), primary_key=True),
    sa.Column("tenant_id", _id(), sa.ForeignKey("tenants.id"), nullable=False),
    sa.Column("model", sa.String(100), nullable=False),
    sa.Column("chunk_count", sa.Integer(), nullable=False),
    sa.Column("char_count", sa.Integer(), nullable=False),
    sa.Column("indexed_at", UTCDateTime(), nullable=False),
)

# Searches whose best result scored under the threshold: what the tenant's knowledge lacks.
knowledge_gaps = sa.Table(
    "knowledge_gaps",
    metadata,
    sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
    sa.Column("tenant_id", _id(), sa.ForeignKey("tenants.id"), nullable=False),
    sa.Column("query", sa.UnicodeText(), nullable=False),
    sa.Column("mode", sa.String(10), nullable=False),
    sa.Column("best_score", sa.Float(), nullable=True),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Index(None, "tenant_id", "created_at"),
)

# A model is a manifest over atoms: its file's header bytes and each tensor are atoms
# (content-addressed, shared by every model and tenant holding the same bytes), and
# model_parts lists them in file order, so the file reassembles byte for byte.
models = sa.Table(
    "models",
    metadata,
    sa.Column("id", _id(), primary_key=True),
    sa.Column("tenant_id", _id(), sa.ForeignKey("tenants.id"), nullable=False),
    sa.Column("name", sa.Unicode(200), nullable=False),
    sa.Column("status", sa.String(12), nullable=False),  # ingesting | ready | failed
    sa.Column("error", sa.UnicodeText(), nullable=True),
    sa.Column("instance_id", sa.String(64), nullable=True),
    sa.Column("sha256", sa.String(64), nullable=False),  # of the whole GGUF file
    sa.Column("file_size", sa.BigInteger(), nullable=False),
    # The uploaded file's atom while ingesting (dropped after, unless the tenant named it).
    sa.Column("source_atom_id", _id(), nullable=True),
    sa.Column("parent_id", _id(), sa.ForeignKey("models.id"), nullable=True),  # slices
    sa.Column("layers", _json(), nullable=True),  # a slice's blocks of its parent
    sa.Column("architecture", sa.String(100), nullable=True),
    sa.Column("parameter_count", sa.BigInteger(), nullable=True),
    sa.Column("quantization", _json(), nullable=True),  # ggml type -> tensor count
    sa.Column("context_length", sa.Integer(), nullable=True),
    sa.Column("vocab_size", sa.Integer(), nullable=True),
    sa.Column("block_count", sa.Integer(), nullable=True),
    sa.Column("chat_template", sa.Boolean(), nullable=True),
    sa.Column("license", sa.Unicode(200), nullable=True),
    sa.Column("new_bytes", sa.BigInteger(), nullable=True),  # bytes no blob held before
    sa.Column("info", _json(), nullable=True),  # other general.* metadata
    sa.Column("profile_atom_id", _id(), nullable=True),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Column("updated_at", UTCDateTime(), nullable=False),
    sa.Index(None, "tenant_id", "created_at"),
)

model_parts = sa.Table(
    "model_parts",
    metadata,
    sa.Column("model_id", _id(), sa.ForeignKey("models.id"), primary_key=True),
    sa.Column("ordinal", sa.Integer(), primary_key=True),  # file order
    sa.Column("tenant_id", _id(), sa.ForeignKey("tenants.id"), nullable=False),
    sa.Column("kind", sa.String(8), nullable=False),  # header | tensor | zeros | bytes
    sa.Column("file_offset", sa.BigInteger(), nullable=False),
    sa.Column("length", sa.BigInteger(), nullable=False),
    sa.Column("atom_id", _id(), sa.ForeignKey("atoms.id"), nullable=True),  # not for zeros
    sa.Column("sha256", sa.String(64), nullable=True),
    sa.Column("tensor_name", sa.Unicode(255), nullable=True),
    sa.Column("tensor_index", sa.Integer(), nullable=True),  # position in the tensor table
    sa.Column("ggml_type", sa.String(16), nullable=True),
    sa.Column("shape", _json(), nullable=True),
    sa.Column("layer", sa.Integer(), nullable=True),
    sa.Index(None, "tenant_id", "atom_id"),
)


# -- generation, metering, events --------------------------------------------------------------

# What produced an output, in order (the seeds' AtomicStream): the prompt atom, each retrieved
# atom with its score and rank, the model (id and file SHA-256), the output atom, token counts,
# timings and cost. ``body`` holds that ordered list; the columns are what queries filter on.
receipts = sa.Table(
    "receipts",
    metadata,
    sa.Column("id", _id(), primary_key=True),
    sa.Column("tenant_id", _id(), sa.ForeignKey("tenants.id"), nullable=False),
    sa.Column("prompt_atom_id", _id(), sa.ForeignKey("atoms.id"), nullable=False),
    sa.Column("output_atom_id", _id(), sa.ForeignKey("atoms.id"), nullable=False),
    sa.Column("model_id", sa.String(64), nullable=False),
    sa.Column("model_sha256", sa.String(64), nullable=False),
    sa.Column("prompt_tokens", sa.Integer(), nullable=False),
    sa.Column("completion_tokens", sa.Integer(), nullable=False),
    sa.Column("body", _json(), nullable=False),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Index(None, "tenant_id", "created_at"),
    sa.Index(None, "tenant_id", "output_atom_id"),
    sa.Index(None, "tenant_id", "prompt_atom_id"),
)

# Append-only usage: one row per (tenant, key, kind), key = the receipt or request id (or an
# activity's own stable key), so a replayed activity or a retried request never counts twice.
usage_ledger = sa.Table(
    "usage_ledger",
    metadata,
    sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
    sa.Column("tenant_id", _id(), sa.ForeignKey("tenants.id"), nullable=False),
    sa.Column("key", sa.String(200), nullable=False),
    sa.Column("kind", sa.String(40), nullable=False),  # e.g. generation.completion_tokens
    sa.Column("quantity", sa.BigInteger(), nullable=False),
    sa.Column("unit", sa.String(20), nullable=False),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.UniqueConstraint("tenant_id", "key", "kind"),
    sa.Index(None, "tenant_id", "created_at"),
)

# Transactional outbox: written in the transaction of the change it announces, published
# afterwards (Event Hubs on Azure, in-process subscribers locally), at least once.
outbox = sa.Table(
    "outbox",
    metadata,
    sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
    sa.Column("tenant_id", _id(), sa.ForeignKey("tenants.id"), nullable=False),
    sa.Column("topic", sa.String(100), nullable=False),
    sa.Column("key", sa.String(200), nullable=False),
    sa.Column("payload", _json(), nullable=False),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Column("published_at", UTCDateTime(), nullable=True),
    sa.Index(None, "published_at", "id"),
)


# -- blob lifecycle ------------------------------------------------------------------------------

# Bytes whose last reference a committed transaction dropped (written in that transaction):
# the lifecycle sweeper deletes them after re-checking ``blobs`` under the write lock, so bytes
# are never deleted before the commit that stops using them, and bytes acquired again before
# the sweep survive it. Not tenant-owned (bytes are shared); one sha may be queued twice.
blob_deletions = sa.Table(
    "blob_deletions",
    metadata,
    sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
    sa.Column("sha256", sa.String(64), nullable=False),
    sa.Column("queued_at", UTCDateTime(), nullable=False),
    sa.Index(None, "sha256"),
)


# -- upload sessions -----------------------------------------------------------------------------

# Files sent straight to storage (a SAS URL on Azure, a streaming PUT here) before they become
# atoms. ``status``: pending (waiting for its bytes), completing (claimed by ``claim_id`` until
# ``claimed_until``), stored (the atom exists, its workflow not yet started), completed, failed.
# What completion gave (atom, workflow, model, or the error) is kept so a retry answers the same.
upload_sessions = sa.Table(
    "upload_sessions",
    metadata,
    sa.Column("id", _id(), primary_key=True),
    sa.Column("tenant_id", _id(), sa.ForeignKey("tenants.id"), nullable=False),
    sa.Column("purpose", sa.String(16), nullable=False),
    sa.Column("size", sa.BigInteger(), nullable=False),
    sa.Column("media_type", sa.String(255), nullable=False),
    sa.Column("metadata", _json(), nullable=False),
    sa.Column("token_hash", sa.String(64), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("claim_id", sa.String(32), nullable=True),
    sa.Column("claimed_until", UTCDateTime(), nullable=True),
    sa.Column("atom_id", _id(), nullable=True),
    sa.Column("deduplicated", sa.Boolean(), nullable=True),
    sa.Column("instance_id", sa.String(100), nullable=True),
    sa.Column("model_id", sa.String(64), nullable=True),
    sa.Column("error", sa.String(2000), nullable=True),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Column("expires_at", UTCDateTime(), nullable=False),
    sa.Column("completed_at", UTCDateTime(), nullable=True),
    sa.Index(None, "expires_at"),
)


# -- the autonomous loop -------------------------------------------------------------------------

# A tenant's governance policy (docs/autonomy.md): which actions may run, which need approval,
# budgets, the schedule. No row: the default (loop off, every action needs approval).
autonomy_policies = sa.Table(
    "autonomy_policies",
    metadata,
    sa.Column("tenant_id", _id(), sa.ForeignKey("tenants.id"), primary_key=True),
    sa.Column("body", _json(), nullable=False),
    sa.Column("updated_at", UTCDateTime(), nullable=False),
    sa.Column("updated_by", sa.String(100), nullable=True),
)

# One row per loop run. ``active_tenant`` is the tenant id while the run is active and NULL
# once it ended: its unique (filtered) index lets a tenant have one active run at a time.
autonomy_runs = sa.Table(
    "autonomy_runs",
    metadata,
    sa.Column("id", _id(), primary_key=True),
    sa.Column("tenant_id", _id(), sa.ForeignKey("tenants.id"), nullable=False),
    sa.Column("instance_id", sa.String(100), nullable=False),
    sa.Column("origin", sa.String(16), nullable=False),  # api | schedule
    sa.Column("status", sa.String(24), nullable=False),
    sa.Column("active_tenant", _id(), nullable=True),
    sa.Column("budget_credits", sa.Float(), nullable=False),
    sa.Column("max_duration_s", sa.Integer(), nullable=False),
    sa.Column("max_iterations", sa.Integer(), nullable=False),
    sa.Column("iterations", sa.Integer(), nullable=False, server_default="0"),
    sa.Column("spent_credits", sa.Float(), nullable=False, server_default="0"),
    sa.Column("summary", _json(), nullable=True),
    sa.Column("error", sa.String(2000), nullable=True),
    sa.Column("started_at", UTCDateTime(), nullable=False),
    sa.Column("ended_at", UTCDateTime(), nullable=True),
    sa.Index(None, "tenant_id", "started_at"),
    sa.Index(
        "ux_autonomy_runs_active_tenant",
        "active_tenant",
        unique=True,
        sqlite_where=sa.text("active_tenant IS NOT NULL"),
        mssql_where=sa.text("active_tenant IS NOT NULL"),
    ),
)

# The audit: one row per phase of every run (inputs, outputs, decision and decider, cost,
# duration). Written by the phase's activity, idempotent by (run, iteration, phase).
autonomy_phases = sa.Table(
    "autonomy_phases",
    metadata,
    sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
    sa.Column("tenant_id", _id(), sa.ForeignKey("tenants.id"), nullable=False),
    sa.Column("run_id", _id(), sa.ForeignKey("autonomy_runs.id"), nullable=False),
    sa.Column("iteration", sa.Integer(), nullable=False),
    sa.Column("phase", sa.String(16), nullable=False),
    sa.Column("status", sa.String(24), nullable=False),
    sa.Column("inputs", _json(), nullable=False),
    sa.Column("outputs", _json(), nullable=False),
    sa.Column("decision", sa.String(40), nullable=True),
    sa.Column("decider", sa.String(100), nullable=True),
    sa.Column("cost_credits", sa.Float(), nullable=False, server_default="0"),
    sa.Column("duration_ms", sa.Float(), nullable=False, server_default="0"),
    sa.Column("started_at", UTCDateTime(), nullable=False),
    sa.Column("ended_at", UTCDateTime(), nullable=False),
    sa.UniqueConstraint("tenant_id", "run_id", "iteration", "phase"),
)

# Typed actions a run planned, with their decision, execution and outcome. The id is the
# idempotency key of the executor: an action applies once however often its activity runs.
autonomy_actions = sa.Table(
    "autonomy_actions",
    metadata,
    sa.Column("id", _id(), primary_key=True),
    sa.Column("tenant_id", _id(), sa.ForeignKey("tenants.id"), nullable=False),
    sa.Column("run_id", _id(), sa.ForeignKey("autonomy_runs.id"), nullable=False),
    sa.Column("iteration", sa.Integer(), nullable=False),
    sa.Column("name", sa.String(64), nullable=False),
    sa.Column("version", sa.Integer(), nullable=False),
    sa.Column("parameters", _json(), nullable=False),
    sa.Column("planned_by", sa.String(16), nullable=False),  # model | deterministic
    sa.Column("status", sa.String(24), nullable=False),
    sa.Column("decided_by", sa.String(100), nullable=True),
    sa.Column("result", _json(), nullable=True),
    sa.Column("outcome", _json(), nullable=True),
    sa.Column("error", sa.String(4000), nullable=True),
    sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Column("updated_at", UTCDateTime(), nullable=False),
    sa.Column("applied_at", UTCDateTime(), nullable=True),
    sa.Column("reverted_at", UTCDateTime(), nullable=True),
    sa.Index(None, "tenant_id", "run_id"),
)

# Human approvals of actions. ``decided_by``: the deciding API key's id, or ``policy:<rule>``
# or ``timer`` (expired). A decision is a compare-and-set from pending.
autonomy_approvals = sa.Table(
    "autonomy_approvals",
    metadata,
    sa.Column("id", _id(), primary_key=True),
    sa.Column("tenant_id", _id(), sa.ForeignKey("tenants.id"), nullable=False),
    sa.Column("run_id", _id(), sa.ForeignKey("autonomy_runs.id"), nullable=False),
    sa.Column("action_id", _id(), sa.ForeignKey("autonomy_actions.id"), nullable=False),
    sa.Column("instance_id", sa.String(100), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("requested_at", UTCDateTime(), nullable=False),
    sa.Column("expires_at", UTCDateTime(), nullable=False),
    sa.Column("decided_at", UTCDateTime(), nullable=True),
    sa.Column("decided_by", sa.String(100), nullable=True),
    sa.Column("note", sa.String(1000), nullable=True),  # the decider's comment
    sa.Index(None, "tenant_id", "status", "requested_at"),
)

# Actions that still failed after their retries: kept with input, error and attempts until
# an admin retries or discards them.
autonomy_dead_letters = sa.Table(
    "autonomy_dead_letters",
    metadata,
    sa.Column("id", _id(), primary_key=True),
    sa.Column("tenant_id", _id(), sa.ForeignKey("tenants.id"), nullable=False),
    sa.Column("run_id", _id(), sa.ForeignKey("autonomy_runs.id"), nullable=False),
    sa.Column("action_id", _id(), sa.ForeignKey("autonomy_actions.id"), nullable=False),
    sa.Column("name", sa.String(64), nullable=False),
    sa.Column("parameters", _json(), nullable=False),
    sa.Column("error", sa.String(4000), nullable=False),
    sa.Column("attempts", sa.Integer(), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),  # parked|retrying|resolved|discarded
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Column("updated_at", UTCDateTime(), nullable=False),
    sa.Column("resolved_by", sa.String(100), nullable=True),
    sa.UniqueConstraint("tenant_id", "action_id"),
    sa.Index(None, "tenant_id", "status", "created_at"),
)

# learn_association: a query (kept as an atom, and as its vector) linked to the atom that
# answers it; search lifts that atom for queries close to this one.
learned_associations = sa.Table(
    "learned_associations",
    metadata,
    sa.Column("id", _id(), primary_key=True),
    sa.Column("tenant_id", _id(), sa.ForeignKey("tenants.id"), nullable=False),
    sa.Column("action_id", _id(), nullable=False),
    sa.Column("query", sa.UnicodeText(), nullable=False),
    sa.Column("model", sa.String(100), nullable=False),
    sa.Column("query_vector", sa.LargeBinary(), nullable=False),
    sa.Column("query_atom_id", _id(), sa.ForeignKey("atoms.id"), nullable=False),
    sa.Column("atom_id", _id(), sa.ForeignKey("atoms.id"), nullable=False),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.UniqueConstraint("tenant_id", "action_id"),
    # Search checks the version (count, newest) of one tenant's associations of its model.
    sa.Index(None, "tenant_id", "model", "created_at"),
)

# cache_answer: a repeated prompt's answer, keyed by the prompt, the model's SHA-256 and the
# atoms retrieved for it (a change in any is a miss).
answer_cache = sa.Table(
    "answer_cache",
    metadata,
    sa.Column("id", _id(), primary_key=True),
    sa.Column("tenant_id", _id(), sa.ForeignKey("tenants.id"), nullable=False),
    sa.Column("action_id", _id(), nullable=False),
    sa.Column("cache_key", sa.String(64), nullable=False),
    sa.Column("prompt", sa.UnicodeText(), nullable=False),
    sa.Column("model_sha256", sa.String(64), nullable=False),
    sa.Column("atom_ids", _json(), nullable=False),
    sa.Column("receipt_id", _id(), nullable=False),
    sa.Column("output_atom_id", _id(), sa.ForeignKey("atoms.id"), nullable=False),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.UniqueConstraint("tenant_id", "cache_key"),
)

# Workflows that failed, recorded by the orchestrator itself as it fails (the Durable backend
# is not queryable by tenant from an activity): what retry_failed_workflow re-runs.
workflow_failures = sa.Table(
    "workflow_failures",
    metadata,
    sa.Column("instance_id", sa.String(200), primary_key=True),
    sa.Column("tenant_id", _id(), sa.ForeignKey("tenants.id"), nullable=False),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("input", _json(), nullable=False),
    sa.Column("error", sa.String(4000), nullable=False),
    sa.Column("failed_at", UTCDateTime(), nullable=False),
    sa.Column("retried_by", sa.String(200), nullable=True),
    sa.Index(None, "tenant_id", "failed_at"),
)


# -- the agent factory (docs/agents.md) -----------------------------------------------------------

# A tenant's agent names: each points at its latest version, or at a pinned one. Retiring a
# name stops new runs; its versions and their runs stay readable for audit.
agents = sa.Table(
    "agents",
    metadata,
    sa.Column("tenant_id", _id(), sa.ForeignKey("tenants.id"), primary_key=True),
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("latest_version", sa.String(64), nullable=False),
    sa.Column("pinned_version", sa.String(64), nullable=True),
    sa.Column("status", sa.String(16), nullable=False),  # active | retired
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Column("updated_at", UTCDateTime(), nullable=False),
    sa.Column("retired_at", UTCDateTime(), nullable=True),
)

# Compiled, immutable agent versions. ``id`` is the SHA-256 of the compiled spec's canonical
# JSON (RFC 8785): the same spec compiled twice is the same row.
agent_versions = sa.Table(
    "agent_versions",
    metadata,
    sa.Column("tenant_id", _id(), sa.ForeignKey("tenants.id"), primary_key=True),
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("name", sa.String(64), nullable=False),
    sa.Column("spec", _json(), nullable=False),
    sa.Column("model_id", sa.String(64), nullable=False),
    sa.Column("model_sha256", sa.String(64), nullable=False),
    sa.Column("snapshot", sa.BigInteger(), nullable=False),  # the knowledge watermark
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Column("created_by", sa.String(100), nullable=True),
    sa.Index(None, "tenant_id", "name", "created_at"),
)

# One row per agent run (a Durable orchestration): its input, status, spend and, once it
# ended, its receipt (the steps' receipts in order).
agent_runs = sa.Table(
    "agent_runs",
    metadata,
    sa.Column("id", _id(), primary_key=True),
    sa.Column("tenant_id", _id(), sa.ForeignKey("tenants.id"), nullable=False),
    sa.Column("agent_name", sa.String(64), nullable=False),
    sa.Column("version_id", sa.String(64), nullable=False),
    sa.Column("instance_id", sa.String(100), nullable=False),
    sa.Column("status", sa.String(24), nullable=False),
    sa.Column("input_text", sa.UnicodeText(), nullable=False),
    sa.Column("seed", sa.BigInteger(), nullable=True),
    sa.Column("budget_credits", sa.Float(), nullable=False),
    sa.Column("max_steps", sa.Integer(), nullable=False),
    sa.Column("max_duration_s", sa.Integer(), nullable=False),
    sa.Column("steps", sa.Integer(), nullable=False, server_default="0"),
    sa.Column("spent_credits", sa.Float(), nullable=False, server_default="0"),
    sa.Column("answer", sa.UnicodeText(), nullable=True),
    sa.Column("answer_atom_id", _id(), nullable=True),
    sa.Column("receipt", _json(), nullable=True),
    sa.Column("error", sa.String(2000), nullable=True),
    sa.Column("started_at", UTCDateTime(), nullable=False),
    sa.Column("ended_at", UTCDateTime(), nullable=True),
    sa.Index(None, "tenant_id", "started_at"),
    sa.Index(None, "tenant_id", "agent_name", "started_at"),
    sa.Index(None, "tenant_id", "status"),  # the tenant's running runs, counted at start
)

# A run's steps in order: each ``step`` has a ``model`` row (the model's choice, with its
# generation receipt) and, when it chose a tool, a ``tool`` row (the platform's decision and
# the call's result). Idempotent by (run, step, kind): a replayed activity adds nothing.
agent_steps = sa.Table(
    "agent_steps",
    metadata,
    sa.Column("id", _id(), primary_key=True),
    sa.Column("tenant_id", _id(), sa.ForeignKey("tenants.id"), nullable=False),
    sa.Column("run_id", _id(), sa.ForeignKey("agent_runs.id"), nullable=False),
    sa.Column("step", sa.Integer(), nullable=False),
    sa.Column("kind", sa.String(8), nullable=False),  # model | tool
    sa.Column("name", sa.String(64), nullable=True),  # the tool
    sa.Column("arguments", _json(), nullable=True),
    sa.Column("status", sa.String(24), nullable=False),
    sa.Column("decided_by", sa.String(100), nullable=True),
    sa.Column("receipt_id", _id(), nullable=True),
    sa.Column("result", _json(), nullable=True),
    sa.Column("cost_credits", sa.Float(), nullable=False, server_default="0"),
    sa.Column("started_at", UTCDateTime(), nullable=False),
    sa.Column("ended_at", UTCDateTime(), nullable=True),
    sa.UniqueConstraint("tenant_id", "run_id", "step", "kind"),
)

# Every constitution rule a step broke, with what followed (the run ended, or a human was
# asked). Idempotent by (run, step, rule).
agent_violations = sa.Table(
    "agent_violations",
    metadata,
    sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
    sa.Column("tenant_id", _id(), sa.ForeignKey("tenants.id"), nullable=False),
    sa.Column("run_id", _id(), sa.ForeignKey("agent_runs.id"), nullable=False),
    sa.Column("step", sa.Integer(), nullable=False),
    sa.Column("rule_type", sa.String(64), nullable=False),  # constitution[i].type, or a guard
    sa.Column("detail", sa.String(2000), nullable=False),
    sa.Column("outcome", sa.String(16), nullable=False),  # end | approval
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.UniqueConstraint("tenant_id", "run_id", "step", "rule_type"),
)

# Approvals of agents' gated tool calls and answers that broke an approval-gated rule; the
# approvals API serves these with the loop's (/v1/approvals), as the same external events.
agent_approvals = sa.Table(
    "agent_approvals",
    metadata,
    sa.Column("id", _id(), primary_key=True),
    sa.Column("tenant_id", _id(), sa.ForeignKey("tenants.id"), nullable=False),
    sa.Column("run_id", _id(), sa.ForeignKey("agent_runs.id"), nullable=False),
    sa.Column("step_id", _id(), sa.ForeignKey("agent_steps.id"), nullable=False),
    sa.Column("instance_id", sa.String(100), nullable=False),
    sa.Column("reason", sa.String(200), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("requested_at", UTCDateTime(), nullable=False),
    sa.Column("expires_at", UTCDateTime(), nullable=False),
    sa.Column("decided_at", UTCDateTime(), nullable=True),
    sa.Column("decided_by", sa.String(100), nullable=True),
    sa.Column("note", sa.String(1000), nullable=True),
    sa.UniqueConstraint("tenant_id", "step_id"),
    sa.Index(None, "tenant_id", "status", "requested_at"),
)


# -- admission control (docs/serving.md) -----------------------------------------------------------

# A tenant's own limits, set by the operator (``hartonomous plan set``). A NULL column, or no
# row, is the default plan's value from settings (``HARTONOMOUS_PLAN_*``), so a default
# follows the settings and GET /v1/billing/plan can say which limits are defaults.
tenant_plans = sa.Table(
    "tenant_plans",
    metadata,
    sa.Column("tenant_id", _id(), sa.ForeignKey("tenants.id"), primary_key=True),
    sa.Column("requests_per_second", sa.Float(), nullable=True),
    sa.Column("burst", sa.Integer(), nullable=True),
    sa.Column("concurrent_generations", sa.Integer(), nullable=True),
    sa.Column("tokens_per_minute", sa.Integer(), nullable=True),
    sa.Column("updated_at", UTCDateTime(), nullable=False),
)


# -- credits and billing (docs/billing.md) ------------------------------------------------------
# Amounts are integer micro-credits (1 credit = 1,000,000): sums are exact, as money must be.

# One row per tenant: how it pays, what it holds for work in flight and what it owes beyond
# its grants. Taken first (``UPDATE ... held = held + x``) by every hold and settlement, so
# on Azure SQL its row lock orders a tenant's debits; the balance is its grants' remaining
# credits + credit_limit - owed - held. Read across tenants by the sweeps and the billing run.
credit_accounts = sa.Table(
    "credit_accounts",
    metadata,
    sa.Column("tenant_id", _id(), sa.ForeignKey("tenants.id"), primary_key=True),
    sa.Column("mode", sa.String(16), nullable=False),  # prepaid | postpaid
    sa.Column("credit_limit", sa.BigInteger(), nullable=False),  # postpaid: owed may reach it
    sa.Column("held", sa.BigInteger(), nullable=False),
    sa.Column("owed", sa.BigInteger(), nullable=False),  # settled beyond grants, not yet paid
    sa.Column("stripe_customer_id", sa.String(255), nullable=True),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Column("updated_at", UTCDateTime(), nullable=False),
)

# Credits given: the plan's starting grant, the operator's, a payment's. Settlement burns
# them in (priority, expiry, age) order; source_ref makes each grant once (a payment intent's
# id, the operator's request id), so a replayed webhook grants nothing twice.
credit_grants = sa.Table(
    "credit_grants",
    metadata,
    sa.Column("id", _id(), primary_key=True),
    sa.Column("tenant_id", _id(), sa.ForeignKey("tenants.id"), nullable=False),
    sa.Column("kind", sa.String(16), nullable=False),  # paid | promotional
    sa.Column("source", sa.String(16), nullable=False),  # plan | operator | payment
    sa.Column("source_ref", sa.String(200), nullable=False),
    sa.Column("amount", sa.BigInteger(), nullable=False),
    sa.Column("remaining", sa.BigInteger(), nullable=False),
    sa.Column("priority", sa.Integer(), nullable=False),  # lower burns first
    sa.Column("expires_at", UTCDateTime(), nullable=True),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.UniqueConstraint("tenant_id", "source_ref"),
    sa.Index(None, "tenant_id", "priority", "expires_at"),
)

# Credits held for work in flight, keyed as the usage that will settle it (a generation's
# ``receipt:{id}``): the receipt's transaction closes it. One never settled (its server died)
# is released by the sweep once past expires_at.
credit_holds = sa.Table(
    "credit_holds",
    metadata,
    sa.Column("id", _id(), primary_key=True),
    sa.Column("tenant_id", _id(), sa.ForeignKey("tenants.id"), nullable=False),
    sa.Column("key", sa.String(200), nullable=False),
    sa.Column("estimate", sa.BigInteger(), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),  # open | settled | released
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Column("expires_at", UTCDateTime(), nullable=False),
    sa.Column("closed_at", UTCDateTime(), nullable=True),
    sa.UniqueConstraint("tenant_id", "key"),
    sa.Index(None, "tenant_id", "status", "expires_at"),
)

# The credit ledger: every movement of credits, appended in the transaction that caused it
# (a settlement in its receipt's). ``owed`` is the part of a settlement no grant covered:
# what a postpaid tenant's invoice bills, marked with the invoice once billed.
credit_entries = sa.Table(
    "credit_entries",
    metadata,
    sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
    sa.Column("tenant_id", _id(), sa.ForeignKey("tenants.id"), nullable=False),
    sa.Column("kind", sa.String(16), nullable=False),  # grant | settle | expire
    sa.Column("amount", sa.BigInteger(), nullable=False),  # signed: + grant, - settle
    sa.Column("owed", sa.BigInteger(), nullable=False),
    sa.Column("key", sa.String(200), nullable=False),  # the usage key, or the grant's id
    sa.Column("detail", _json(), nullable=False),
    sa.Column("invoice_id", _id(), nullable=True),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Index(None, "tenant_id", "created_at", "id"),
    sa.Index(None, "tenant_id", "invoice_id", "created_at"),
)

# A postpaid tenant's invoice for one period, and where the billing run got to with Stripe:
# each step's Stripe id is kept before the next step, so a crashed run resumes, never bills
# twice. Reconciliation writes Stripe's total beside the ledger's.
invoices = sa.Table(
    "invoices",
    metadata,
    sa.Column("id", _id(), primary_key=True),
    sa.Column("tenant_id", _id(), sa.ForeignKey("tenants.id"), nullable=False),
    sa.Column("period", sa.String(32), nullable=False),  # e.g. 2026-11
    sa.Column("period_start", UTCDateTime(), nullable=False),
    sa.Column("period_end", UTCDateTime(), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),  # draft | open | paid | empty
    sa.Column("credits", sa.BigInteger(), nullable=False),
    sa.Column("amount_cents", sa.BigInteger(), nullable=False),
    sa.Column("currency", sa.String(3), nullable=False),
    sa.Column("stripe_invoice_item_id", sa.String(255), nullable=True),
    sa.Column("stripe_invoice_id", sa.String(255), nullable=True),
    sa.Column("stripe_total_cents", sa.BigInteger(), nullable=True),
    sa.Column("stripe_status", sa.String(32), nullable=True),
    sa.Column("difference_cents", sa.BigInteger(), nullable=True),
    sa.Column("reconciled_at", UTCDateTime(), nullable=True),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Column("updated_at", UTCDateTime(), nullable=False),
    sa.UniqueConstraint("tenant_id", "period"),
)

# Stripe webhook events seen, by Stripe's event id: a replayed delivery changes nothing.
# Written before the tenant is known (the event names it), so RLS gives it no predicate.
stripe_events = sa.Table(
    "stripe_events",
    metadata,
    sa.Column("id", sa.String(255), primary_key=True),
    sa.Column("type", sa.String(100), nullable=False),
    sa.Column("tenant_id", _id(), nullable=True),
    sa.Column("outcome", sa.String(32), nullable=False),  # queued | ignored | done | failed
    sa.Column("received_at", UTCDateTime(), nullable=False),
    sa.Column("done_at", UTCDateTime(), nullable=True),
)

# Concepts (docs/concepts.md): clusters of a tenant's chunks by meaning. ``id`` is the stable
# identity that re-runs keep; ``atom_id`` the description atom (modality concept) of the run
# that last described it, which the members' BELONGS_TO_CONCEPT edges point at.
concepts = sa.Table(
    "concepts",
    metadata,
    sa.Column("id", _id(), primary_key=True),
    sa.Column("tenant_id", _id(), sa.ForeignKey("tenants.id"), nullable=False),
    sa.Column("modality", sa.String(32), nullable=False),
    sa.Column("atom_id", _id(), sa.ForeignKey("atoms.id"), nullable=False),
    sa.Column("state", sa.String(16), nullable=False),  # active | retired | merged
    # 0: a cluster of chunks, their members; 1: a group of level-0 concepts, members by way
    # of them (concepts/grouping.py). ``broader_id``: a level-0 concept's group, as of the
    # run that last wrote it (never deleted, so no foreign key is needed to keep it valid).
    sa.Column("level", sa.Integer(), nullable=False, server_default=sa.text("0")),
    sa.Column("broader_id", _id(), nullable=True),
    sa.Column("name", sa.Unicode(300), nullable=False),
    sa.Column("terms", _json(), nullable=False),
    sa.Column("size", sa.Integer(), nullable=False),
    sa.Column("centroid", Vector(EMBEDDING_DIMENSION), nullable=False),
    sa.Column("run_id", _id(), nullable=False),  # the run that last kept or created it
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Column("updated_at", UTCDateTime(), nullable=False),
    sa.Index(None, "tenant_id", "modality", "state"),
    sa.Index(None, "tenant_id", "created_at", "id"),
    sa.Index(None, "tenant_id", "atom_id"),
    sa.Index(None, "tenant_id", "broader_id"),
)

# One row per discovery run. ``active_key`` is tenant and modality while it runs and NULL
# after: its unique (filtered) index allows one running discovery per tenant and modality.
concept_runs = sa.Table(
    "concept_runs",
    metadata,
    sa.Column("id", _id(), primary_key=True),
    sa.Column("tenant_id", _id(), sa.ForeignKey("tenants.id"), nullable=False),
    sa.Column("modality", sa.String(32), nullable=False),
    sa.Column("instance_id", sa.String(100), nullable=False),
    sa.Column("origin", sa.String(16), nullable=False),  # api | schedule | loop
    sa.Column("status", sa.String(16), nullable=False),  # running | completed | failed
    sa.Column("active_key", sa.String(80), nullable=True),
    sa.Column("k_requested", sa.Integer(), nullable=True),
    sa.Column("seed", sa.Integer(), nullable=False),
    sa.Column("summary", _json(), nullable=True),
    sa.Column("error", sa.String(2000), nullable=True),
    sa.Column("started_at", UTCDateTime(), nullable=False),
    sa.Column("ended_at", UTCDateTime(), nullable=True),
    sa.Index(None, "tenant_id", "modality", "started_at"),
    sa.Index(
        "ux_concept_runs_active_key",
        "active_key",
        unique=True,
        sqlite_where=sa.text("active_key IS NOT NULL"),
        mssql_where=sa.text("active_key IS NOT NULL"),
    ),
)

# The concepts' own graph, by stable concept id: IS_A and RELATED from binding (with their
# evidence), SPLIT_FROM and MERGED_INTO from discovery's lineage.
concept_edges = sa.Table(
    "concept_edges",
    metadata,
    sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
    sa.Column("tenant_id", _id(), sa.ForeignKey("tenants.id"), nullable=False),
    sa.Column("src_id", _id(), sa.ForeignKey("concepts.id"), nullable=False),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("dst_id", _id(), sa.ForeignKey("concepts.id"), nullable=False),
    sa.Column("confidence", sa.Float(), nullable=False),
    sa.Column("evidence", _json(), nullable=False),
    sa.Column("run_id", _id(), nullable=False),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.UniqueConstraint("tenant_id", "src_id", "kind", "dst_id"),
    sa.Index(None, "tenant_id", "dst_id", "kind"),
)

# Tenants that asked for hourly discovery (PUT /v1/concepts/schedule), by modality. The
# hourly timer lists them across tenants.
concept_schedules = sa.Table(
    "concept_schedules",
    metadata,
    sa.Column("tenant_id", _id(), sa.ForeignKey("tenants.id"), primary_key=True),
    sa.Column("modality", sa.String(32), primary_key=True),
    sa.Column("k", sa.Integer(), nullable=True),  # NULL: chosen by the silhouette
    sa.Column("enabled", sa.Boolean(), nullable=False),
    sa.Column("updated_at", UTCDateTime(), nullable=False),
    sa.Index(None, "enabled"),
)
