"""One typed settings class: environment (prefix ``HARTONOMOUS_``), ``.env`` and CLI flags feed it.

Every field is documented in ``docs/configuration.md``; a test fails when one is not.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

GiB = 1024**3


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="HARTONOMOUS_", env_file=".env", extra="ignore", frozen=True
    )

    data_dir: Path = Field(
        default=Path(".hartonomous"),
        description="Folder of the embedded store: the SQLite database and the local blob folder.",
    )
    database_url: str | None = Field(
        default=None,
        description="SQLAlchemy URL. Default: SQLite in data_dir. Azure SQL: mssql+pyodbc://...",
    )
    blob_backend: Literal["local", "azure"] = Field(
        default="local", description="Where atom bytes live: a local folder or Azure Blob Storage."
    )
    blob_dir: Path | None = Field(
        default=None, description="Folder of the local blob store. Default: data_dir/blobs."
    )
    azure_storage_connection_string: SecretStr | None = Field(
        default=None, description="Connection string of the storage account (blob_backend=azure)."
    )
    azure_storage_account_url: str | None = Field(
        default=None,
        description="Account URL used with DefaultAzureCredential when no connection string.",
    )
    blob_container: str = Field(
        default="atoms", description="Container that holds atom bytes (blob_backend=azure)."
    )
    max_upload_bytes: int = Field(
        default=1 * GiB, gt=0, description="Largest accepted upload in bytes; larger gets 413."
    )
    page_size_max: int = Field(
        default=1000, gt=0, description="Largest `limit` accepted by list endpoints."
    )
    max_json_body_bytes: int = Field(
        default=1024**2,
        gt=0,
        description="Largest request body of a route that reads it whole (JSON); 413 past it.",
    )
    max_model_bytes: int = Field(
        default=64 * GiB, gt=0, description="Largest accepted GGUF upload in bytes (413 past it)."
    )
    max_session_upload_bytes: int = Field(
        default=64 * GiB,
        gt=0,
        description="Largest `size` an upload session (POST /v1/uploads) may declare.",
    )
    upload_session_ttl_s: int = Field(
        default=6 * 3600,
        ge=60,
        le=7 * 24 * 3600,
        description="Seconds an upload session (and its SAS URL) stays open for its bytes.",
    )
    max_document_bytes: int = Field(
        default=64 * 1024**2,
        gt=0,
        description="Largest document ingestion parses (parsing needs it whole in memory).",
    )
    embedding_batch_size: int = Field(
        default=64, gt=0, le=1024, description="Chunks per embedding batch activity."
    )
    embedding_precision: Literal["auto", "float32", "bfloat16"] = Field(
        default="auto",
        description="Arithmetic of the embedded embedding model; auto: bfloat16 where native.",
    )
    search_gap_threshold: float = Field(
        default=0.35,
        ge=-1,
        le=1,
        description="Best cosine under which a search is recorded as a knowledge gap.",
    )
    vector_ann_threshold: int | None = Field(
        default=50_000,
        gt=0,
        description="Chunks past which a tenant's vector search uses an ANN index (usearch).",
    )
    workflow_activity_workers: int = Field(
        default=8, gt=0, le=256, description="Threads running activities in the local host."
    )
    autonomy_retry_first_ms: int = Field(
        default=1000,
        ge=1,
        le=60_000,
        description="First wait of an autonomy action's retries, in ms (it doubles each time).",
    )
    agent_max_active_runs: int = Field(
        default=16,
        ge=1,
        le=10_000,
        description="Agent runs a tenant may have running at once (more: 429).",
    )
    autonomy_max_associations: int = Field(
        default=1000,
        ge=0,
        le=100_000,
        description="Learned associations a tenant may hold (every search reads them).",
    )
    inference_url: str | None = Field(
        default=None,
        description="Base URL of the GPU worker (e.g. http://gpu-worker:8080); unset: "
        "llama.cpp runs in this process.",
    )
    embedding_url: str | None = Field(
        default=None,
        description="Base URL of the GPU worker for embeddings; unset: MiniLM runs in this "
        "process.",
    )
    worker_key: SecretStr | None = Field(
        default=None,
        description="Bearer key between the platform and the GPU worker (the worker refuses "
        "calls without it when set).",
    )
    model_cache_dir: Path | None = Field(
        default=None,
        description="Where model files are materialized for llama.cpp, by SHA-256. "
        "Default: data_dir/model-cache.",
    )
    inference_context_tokens: int = Field(
        default=4096, ge=256, le=131_072, description="llama.cpp context size (prompt and output)."
    )
    inference_threads: int | None = Field(
        default=None,
        gt=0,
        le=512,
        description="llama.cpp threads (prompt and output); unset: every core but one.",
    )
    inference_batch_threads: int | None = Field(
        default=None,
        gt=0,
        le=512,
        description="llama-server's threads for steps of several rows (prompts, several "
        "slots decoding together); unset: every core.",
    )
    inference_gpu_layers: int = Field(
        default=0, ge=-1, description="Layers llama.cpp puts on the GPU (-1: all); the worker's."
    )
    inference_engine: Literal["llama-cpp-python", "llama-server"] = Field(
        default="llama-cpp-python",
        description="In-process llama.cpp, or llama.cpp's llama-server as a managed subprocess "
        "per model whose slots batch concurrent generations (make llama-server builds it).",
    )
    inference_slots: int = Field(
        default=8,
        ge=1,
        le=256,
        description="llama-server's parallel slots per model: generations batched together.",
    )
    event_hubs_connection_string: SecretStr | None = Field(
        default=None,
        description="Event Hubs namespace connection string: the outbox publishes there "
        "(unset: to in-process subscribers).",
    )
    event_hub_name: str = Field(
        default="hartonomous-events", description="The event hub that receives outbox events."
    )
    generation_max_tokens: int = Field(
        default=1024, gt=0, le=32_768, description="Largest max_tokens a generation may ask for."
    )
    redis_url: SecretStr | None = Field(
        default=None,
        description="Redis (Azure Managed Redis) holding the admission limiters' state, shared "
        "by every instance (unset: in this process, the embedded world).",
    )
    plan_requests_per_second: float = Field(
        default=20.0,
        gt=0,
        le=100_000,
        description="The default plan's requests per second per tenant (token bucket refill).",
    )
    plan_burst: int = Field(
        default=40,
        ge=1,
        le=1_000_000,
        description="The default plan's burst: requests a tenant may make at once after a pause.",
    )
    plan_concurrent_generations: int = Field(
        default=2,
        ge=1,
        le=10_000,
        description="The default plan's generations a tenant may have running or queued at once.",
    )
    plan_tokens_per_minute: int = Field(
        default=20_000,
        ge=1,
        le=100_000_000,
        description="The default plan's model tokens (prompt and output) per tenant per minute.",
    )
    billing_starting_credits: float = Field(
        default=1000.0,
        ge=0,
        le=1_000_000,
        description="The default plan's promotional starting grant, in credits, given to every "
        "tenant when its credit account opens (on its first metered request).",
    )
    billing_starting_days: int = Field(
        default=0,
        ge=0,
        le=3650,
        description="Days the starting grant lasts (0: it does not expire).",
    )
    concepts_max_chunks: int = Field(
        default=200_000,
        ge=100,
        le=2_000_000,
        description="Chunks one concept discovery clusters at most (its matrix is held in "
        "memory: 1.5 KiB a chunk at 384 dimensions); past it the first ones by index order.",
    )
    billing_hold_ttl_s: int = Field(
        default=3600,
        ge=60,
        le=7 * 86400,
        description="A hold not settled by then (its server died) is released by the sweep.",
    )
    billing_cents_per_credit: int = Field(
        default=1,
        ge=1,
        le=100_000,
        description="What one credit costs, in the smallest unit of billing_currency.",
    )
    billing_currency: str = Field(
        default="usd", pattern=r"^[a-z]{3}$", description="ISO 4217 code, lower case (Stripe's)."
    )
    billing_top_up_min_credits: int = Field(
        default=50, ge=1, description="The smallest top-up (Stripe charges at least $0.50)."
    )
    billing_top_up_max_credits: int = Field(
        default=1_000_000, ge=1, le=10**9, description="The largest top-up."
    )
    billing_retry_first_ms: int = Field(
        default=5000,
        ge=10,
        le=600_000,
        description="The billing run's first retry of a tenant after a Stripe failure; each "
        "next waits twice as long (6 attempts, at most 5 minutes apart), then dead letter.",
    )
    stripe_flavor: Literal["stripe", "localstripe"] = Field(
        default="stripe",
        description="localstripe: the Stripe-protocol server the tests run (invoices through a "
        "free subscription; docs/billing.md).",
    )
    stripe_api_key: SecretStr | None = Field(
        default=None,
        description="Stripe's secret key (sk_...); unset: payments are off and credits come "
        "from the operator only.",
    )
    stripe_webhook_secret: SecretStr | None = Field(
        default=None, description="The webhook endpoint's signing secret (whsec_...)."
    )
    stripe_api_base: str | None = Field(
        default=None,
        description="Another Stripe-protocol server (localstripe in the tests); unset: Stripe.",
    )
    generation_niceness: int = Field(
        default=10,
        ge=0,
        le=19,
        description="Added to the nice value of the threads that run generations (Linux), so "
        "the cores serve other requests first when contended (0: the same priority).",
    )
    generation_queue_depth: int = Field(
        default=8,
        ge=1,
        le=10_000,
        description="Generations that may wait for a model, per model (more: 503 with "
        "Retry-After, at once).",
    )

    @model_validator(mode="after")
    def _azure_blob_needs_credentials(self) -> Settings:
        if self.blob_backend == "azure" and not (
            self.azure_storage_connection_string or self.azure_storage_account_url
        ):
            raise ValueError(
                "blob_backend=azure needs HARTONOMOUS_AZURE_STORAGE_CONNECTION_STRING "
                "or HARTONOMOUS_AZURE_STORAGE_ACCOUNT_URL"
            )
        return self

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'hartonomous.db').resolve()}"

    @property
    def resolved_blob_dir(self) -> Path:
        return (self.blob_dir or self.data_dir / "blobs").resolve()

    @property
    def resolved_model_cache_dir(self) -> Path:
        return (self.model_cache_dir or self.data_dir / "model-cache").resolve()
