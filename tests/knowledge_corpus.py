"""A small knowledge corpus written straight through the repositories (no embedder): documents
with metadata, their chunks (text, keyword index, unit vectors) and HAS_CHUNK edges."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np

from hartonomous.domain.atoms import Atom, Modality
from hartonomous.knowledge.store import HAS_CHUNK
from hartonomous.ports import UnitOfWorkFactory
from hartonomous.services.clock import new_id

AT = datetime(2026, 11, 21, tzinfo=UTC)
MODEL = "test-model"
DIMENSION = 8


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def unit(vector: list[float]) -> np.ndarray:
    v = np.asarray(vector, dtype=np.float32)
    return v / np.linalg.norm(v)


@dataclass
class Corpus:
    tenant_id: str
    documents: dict[str, str] = field(default_factory=dict)  # name -> document atom id
    chunks: dict[str, list[str]] = field(default_factory=dict)  # name -> chunk atom ids


def add_document(
    uow_factory: UnitOfWorkFactory,
    corpus: Corpus,
    name: str,
    texts: list[str],
    vectors: list[np.ndarray],
    metadata: dict[str, Any] | None = None,
    model: str = MODEL,
) -> None:
    tenant = corpus.tenant_id
    doc = Atom(new_id(), tenant, sha(tenant + name), 10, "text/plain", Modality.TEXT, AT,
               dict(metadata or {}))  # fmt: skip
    chunk_atoms = [
        Atom(new_id(), tenant, sha(tenant + t), len(t), "text/plain", Modality.TEXT, AT,
             {"kind": "chunk"})
        for t in texts
    ]  # fmt: skip
    with uow_factory(write=True, tenant_id=tenant) as uow:
        uow.blobs.acquire_many({a.sha256: a.size for a in [doc, *chunk_atoms]}, AT)
        uow.atoms.add_many([doc, *chunk_atoms])
        uow.knowledge.add_chunks(
            tenant, [(a.id, sha(t), t, len(t.split())) for a, t in zip(chunk_atoms, texts,
                                                                       strict=True)]
        )  # fmt: skip
        uow.knowledge.add_embeddings(
            tenant, model, len(vectors[0]),
            [(sha(t), v.astype(np.float32).tobytes()) for t, v in zip(texts, vectors,
                                                                      strict=True)],
            AT,
        )  # fmt: skip
        uow.knowledge.add_edges(
            [{"tenant_id": tenant, "kind": HAS_CHUNK, "src_id": doc.id, "dst_id": a.id,
              "ordinal": i, "start_offset": 0, "end_offset": len(a.sha256), "created_at": AT}
             for i, a in enumerate(chunk_atoms)]
        )  # fmt: skip
        uow.knowledge.record_document(tenant, doc.id, model, len(texts), 100, AT)
        uow.commit()
    corpus.documents[name] = doc.id
    corpus.chunks[name] = [a.id for a in chunk_atoms]
