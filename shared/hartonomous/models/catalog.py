"""The model catalogue: records, pages, a ready model's parts and their bytes.

A model is a GGUF file taken apart into header and tensor atoms (``ingestion.py``); reading
it back reassembles the parts (``assembly.py``). Statuses and media types live here, the
one module every side of the model service imports.
"""

from __future__ import annotations

import base64
import functools
import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime

from hartonomous.errors import Conflict, InvalidInput, NotFound
from hartonomous.models.assembly import open_blob, read_parts
from hartonomous.models.gguf_layout import GGUFLayout, read_layout
from hartonomous.models.store import ModelPart, ModelRecord
from hartonomous.ports import BlobStore, UnitOfWorkFactory
from hartonomous.services.atoms import AtomService

MODEL_MEDIA_TYPE = "application/x-gguf"
HEADER_MEDIA_TYPE = "application/x-gguf-header"
TENSOR_MEDIA_TYPE = "application/x-ggml-tensor"
PROFILE_MEDIA_TYPE = "text/plain"
INGESTING, READY, FAILED = "ingesting", "ready", "failed"
# What a model's profile describes; a slice inherits them from its parent.
PROFILE_FIELDS = (
    "architecture",
    "parameter_count",
    "quantization",
    "context_length",
    "vocab_size",
    "block_count",
    "chat_template",
    "license",
    "info",
)


@dataclass(frozen=True)
class ModelPage:
    items: list[ModelRecord]
    next_cursor: str | None


@dataclass
class ModelCatalog:
    uow_factory: UnitOfWorkFactory
    atoms: AtomService
    blobs: BlobStore

    def __post_init__(self) -> None:
        self._layout = functools.lru_cache(maxsize=8)(self._read_layout)

    def _read_layout(self, sha256: str, size: int) -> GGUFLayout:
        with open_blob(self.blobs, sha256, size) as stream:
            return read_layout(stream, size)

    def layout(self, sha256: str, size: int) -> GGUFLayout:
        """The file's parsed header (cached: every activity of an ingestion needs it)."""
        return self._layout(sha256, size)

    def get(self, tenant_id: str, model_id: str) -> ModelRecord:
        with self.uow_factory(write=False, tenant_id=tenant_id) as uow:
            record = uow.models.get(tenant_id, model_id)
        if record is None:
            raise NotFound(f"no model {model_id!r}")
        return record

    def page(self, tenant_id: str, limit: int, cursor: str | None) -> ModelPage:
        after = _decode_cursor(cursor) if cursor else None
        with self.uow_factory(write=False, tenant_id=tenant_id) as uow:
            items = uow.models.newest(tenant_id, limit + 1, after)
        more = len(items) > limit
        items = items[:limit]
        return ModelPage(items, _encode_cursor(items[-1]) if more else None)

    def ready_parts(self, tenant_id: str, model_id: str) -> tuple[ModelRecord, list[ModelPart]]:
        record = self.get(tenant_id, model_id)
        if record.status != READY:
            raise Conflict(f"model {model_id!r} is {record.status}, not ready")
        with self.uow_factory(write=False, tenant_id=tenant_id) as uow:
            return record, uow.models.parts(tenant_id, model_id)

    def read(
        self, parts: list[ModelPart], start: int = 0, end: int | None = None
    ) -> Iterator[bytes]:
        return read_parts(self.blobs, parts, start, end)


def _encode_cursor(record: ModelRecord) -> str:
    raw = json.dumps([record.created_at.isoformat(), record.id]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        created, model_id = json.loads(raw)
        return datetime.fromisoformat(created), str(model_id)
    except (ValueError, TypeError) as exc:
        raise InvalidInput("the cursor is not one this API returned") from exc
