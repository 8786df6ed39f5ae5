"""Document ingestion: parse, chunk, embed in batches, index in one transaction.

The orchestration (``ingest``) only moves small data: each activity re-derives the chunks
from the document atom (parsing is deterministic and cached per process), so no document
text travels through the workflow history. Embeddings are written per batch, keyed by chunk
content; chunk atoms, their ``HAS_CHUNK`` edges, the keyword index and the document row
appear together in the final transaction, so a failure anywhere leaves nothing half-indexed.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from typing import Any

import azure.durable_functions as df

from hartonomous.errors import NotFound, UnprocessableContent
from hartonomous.knowledge.chunking import Chunk, ChunkingPolicy, Tokenizer, chunk_text
from hartonomous.knowledge.embeddings import Embedder
from hartonomous.knowledge.parsing import extract_text
from hartonomous.knowledge.store import HAS_CHUNK
from hartonomous.knowledge.vectors import VectorSearch
from hartonomous.metering.ledger import Usage
from hartonomous.ports import BlobStore, UnitOfWork
from hartonomous.services.atoms import AtomService
from hartonomous.services.clock import utcnow
from hartonomous.store.repositories import WriteConflict
from hartonomous.store.unit_of_work import UnitOfWorkFactory
from hartonomous.store.workflow_failures import RECORD_FAILURE

INGEST = "ingest_document"
PLAN = "ingest_plan"
EMBED = "ingest_embed_batch"
INDEX = "ingest_index"
CHUNK_MEDIA_TYPE = "text/plain; charset=utf-8"
WAVE = 8  # embedding batches in flight at once; custom status moves between waves


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class Parsed:
    chunks: list[Chunk]
    chars: int

    def unique(self) -> dict[str, Chunk]:
        """sha256 -> first chunk with that text (a document may repeat a paragraph)."""
        out: dict[str, Chunk] = {}
        for chunk in self.chunks:
            out.setdefault(sha256_text(chunk.text), chunk)
        return out


@dataclass
class Ingestion:
    uow_factory: UnitOfWorkFactory
    atoms: AtomService
    blobs: BlobStore
    embedder: Embedder
    tokenizer: Tokenizer
    index: VectorSearch
    max_document_bytes: int
    policy: ChunkingPolicy = field(default_factory=ChunkingPolicy)
    batch_size: int = 64
    # Called in the indexing transaction with the chunk atoms it created (and the embedding
    # model): concepts assign them to their nearest concept there (docs/concepts.md).
    on_indexed: Callable[[UnitOfWork, str, list[str], str], object] | None = None

    parse_cache_chars: int = 64 * 1024 * 1024

    def __post_init__(self) -> None:
        self._cache: OrderedDict[tuple[str, str, str | None], Parsed] = OrderedDict()
        self._cache_chars = 0
        self._cache_lock = threading.Lock()

    def _parse(self, sha256: str, media_type: str, filename: str | None) -> Parsed:
        """Parsed documents by content, least recently used out past ``parse_cache_chars``.
        Every activity of an ingestion needs the chunks; with many documents in flight a
        cache of 16 entries re-parsed each one three times (tokenizing is the cost)."""
        key = (sha256, media_type, filename)
        with self._cache_lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                return self._cache[key]
        parsed = self._parse_uncached(sha256, media_type, filename)
        with self._cache_lock:
            if key not in self._cache:
                self._cache[key] = parsed
                self._cache_chars += parsed.chars
                while self._cache_chars > self.parse_cache_chars and len(self._cache) > 1:
                    _, old = self._cache.popitem(last=False)
                    self._cache_chars -= old.chars
        return parsed

    def _parse_uncached(self, sha256: str, media_type: str, filename: str | None) -> Parsed:
        data = bytearray()
        for piece in self.blobs.read(sha256):
            data += piece
            if len(data) > self.max_document_bytes:
                raise UnprocessableContent(
                    f"documents larger than {self.max_document_bytes} bytes cannot be ingested"
                )
        text = extract_text(bytes(data), media_type, filename)
        return Parsed(chunk_text(text, self.tokenizer, self.policy), len(text))

    def parsed(self, tenant_id: str, document_id: str) -> Parsed:
        with self.uow_factory(write=False, tenant_id=tenant_id) as uow:
            atom = uow.atoms.get(tenant_id, document_id)
        if atom is None:
            raise NotFound(f"no document atom {document_id!r}")
        filename = atom.metadata.get("filename") if isinstance(atom.metadata, dict) else None
        return self._parse(atom.sha256, atom.media_type, filename)

    # -- activities ----------------------------------------------------------------------------

    def plan(self, tenant_id: str, document_id: str) -> dict[str, Any]:
        """What embedding work remains: none at all for bytes already indexed."""
        with self.uow_factory(write=False, tenant_id=tenant_id) as uow:
            done = uow.knowledge.document(tenant_id, document_id)
        if done is not None and done.model == self.embedder.model_name:
            return {"chunks": done.chunk_count, "batches": [], "already_indexed": True}
        unique = self.parsed(tenant_id, document_id).unique()
        shas = list(unique)
        with self.uow_factory(write=False, tenant_id=tenant_id) as uow:
            missing = uow.knowledge.missing_embeddings(tenant_id, shas, self.embedder.model_name)
        todo = [s for s in shas if s in missing]
        batches = [todo[i : i + self.batch_size] for i in range(0, len(todo), self.batch_size)]
        return {"chunks": len(shas), "batches": batches, "already_indexed": False}

    def embed_batch(self, tenant_id: str, document_id: str, shas: list[str]) -> int:
        """Embed these chunks (idempotent: a retried or re-run batch skips what exists)."""
        unique = self.parsed(tenant_id, document_id).unique()
        model = self.embedder.model_name
        with self.uow_factory(write=False, tenant_id=tenant_id) as uow:
            missing = uow.knowledge.missing_embeddings(tenant_id, shas, model)
        todo = [s for s in shas if s in missing]
        if todo:
            vectors = self.embedder.embed([unique[s].text for s in todo])
            rows = [(s, vectors[i].tobytes()) for i, s in enumerate(todo)]
            now = utcnow()
            # Keyed by the batch's chunks: a replayed activity finds its embeddings written
            # (nothing to do, no row) or, if it died before commit, writes both anew.
            key = "embed:" + hashlib.sha256(f"{document_id}:{','.join(todo)}".encode()).hexdigest()
            with self.uow_factory(write=True, tenant_id=tenant_id) as uow:
                uow.knowledge.add_embeddings(tenant_id, model, self.embedder.dimension, rows, now)
                uow.usage.record(
                    tenant_id, key, [Usage("embedding.texts", len(todo), "texts")], now
                )
                uow.commit()
        return len(shas)

    def index_document(self, tenant_id: str, document_id: str) -> dict[str, Any]:
        """Chunk atoms, edges, keyword entries and the document row, in one transaction."""
        parsed = self.parsed(tenant_id, document_id)
        unique = parsed.unique()
        model = self.embedder.model_name
        staged = dict(
            zip(
                unique,
                self.atoms.stage_many([chunk.text.encode("utf-8") for chunk in unique.values()]),
                strict=True,
            )
        )
        try:
            with self.uow_factory(write=True, tenant_id=tenant_id) as uow:
                if uow.knowledge.document(tenant_id, document_id) is not None:
                    return {"chunks": len(parsed.chunks), "new_chunks": 0}
                missing = uow.knowledge.missing_embeddings(tenant_id, list(unique), model)
                if missing:
                    raise WriteConflict(f"{len(missing)} chunks have no embedding yet")
                known = uow.knowledge.chunk_atom_ids(tenant_id, list(unique))
                recorded = self.atoms.record_many_in(
                    uow,
                    tenant_id,
                    [(staged[sha], CHUNK_MEDIA_TYPE, {"kind": "chunk"}) for sha in unique],
                )
                atom_ids = {sha: r.atom.id for sha, r in zip(unique, recorded, strict=True)}
                fresh = [
                    (atom_ids[sha], sha, chunk.text, chunk.tokens)
                    for sha, chunk in unique.items()
                    if sha not in known
                ]
                uow.knowledge.add_chunks(tenant_id, fresh)
                new = len(fresh)
                if self.on_indexed is not None and fresh:
                    self.on_indexed(uow, tenant_id, [row[0] for row in fresh], model)
                now = utcnow()
                uow.knowledge.add_edges(
                    [
                        {
                            "tenant_id": tenant_id,
                            "kind": HAS_CHUNK,
                            "src_id": document_id,
                            "dst_id": atom_ids[sha256_text(c.text)],
                            "ordinal": c.ordinal,
                            "start_offset": c.start,
                            "end_offset": c.end,
                            "created_at": now,
                        }
                        for c in parsed.chunks
                    ]
                )
                uow.knowledge.record_document(
                    tenant_id, document_id, model, len(parsed.chunks), parsed.chars, now
                )
                uow.commit()
        finally:
            for blob in staged.values():
                blob.discard()
        self.index.refresh(tenant_id)
        return {"chunks": len(parsed.chunks), "new_chunks": new}


# -- the orchestration -------------------------------------------------------------------------

RETRY = df.RetryOptions(first_retry_interval_in_milliseconds=1000, max_number_of_attempts=3)


def ingest(context: df.DurableOrchestrationContext) -> Generator[Any, Any, dict[str, Any]]:
    """parse and chunk -> embeddings in batches (fan-out) -> index; progress in custom status.
    A failure is recorded (``workflow_failures``, what the loop's retry reads) before it
    ends the instance as Failed with its error."""
    document = context.get_input()
    try:
        return (yield from _ingest(context, document))
    except Exception as exc:
        failure = {
            "instance_id": context.instance_id,
            "name": INGEST,
            "tenant_id": document["tenant_id"],
            "input": document,
            "error": str(exc),
        }
        yield context.call_activity(RECORD_FAILURE, failure)
        raise


def _ingest(
    context: df.DurableOrchestrationContext, document: dict[str, Any]
) -> Generator[Any, Any, dict[str, Any]]:
    plan = yield context.call_activity(PLAN, document)
    total = plan["chunks"]
    done = total - sum(len(b) for b in plan["batches"])
    context.set_custom_status({"stage": "embedding", "chunks_total": total, "chunks_done": done})
    batches = plan["batches"]
    for i in range(0, len(batches), WAVE):
        wave = [
            context.call_activity_with_retry(EMBED, RETRY, {**document, "shas": shas})
            for shas in batches[i : i + WAVE]
        ]
        done += sum((yield context.task_all(wave)))
        context.set_custom_status(
            {"stage": "embedding", "chunks_total": total, "chunks_done": done}
        )
    result = yield context.call_activity_with_retry(INDEX, RETRY, document)
    context.set_custom_status({"stage": "indexed", "chunks_total": total, "chunks_done": total})
    return {**result, "reused_embeddings": total - sum(len(b) for b in batches),
            "already_indexed": plan["already_indexed"]}  # fmt: skip
