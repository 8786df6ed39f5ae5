"""Models: GGUF files taken apart into header and tensor atoms, reassembled, sliced.

Registration parses and checks the header synchronously (a bad file is a 422 before any
work starts). The ingestion workflow's activities then store the file's parts in groups:
each part is hashed first and written only when no blob holds those bytes yet, so a
fine-tune or a re-upload costs reads, not writes. The parts and the model's ``ready``
status appear in one transaction at the end.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from hartonomous.domain.atoms import Atom
from hartonomous.errors import Conflict, InvalidInput, NotFound
from hartonomous.models.assembly import open_blob, plan_slice, read_parts
from hartonomous.models.gguf_layout import GGUFLayout, read_layout
from hartonomous.models.profile import profile_text, summary
from hartonomous.models.store import BYTES, HEADER, TENSOR, ZEROS, ModelPart, ModelRecord
from hartonomous.ports import BlobStore, StagedBlob
from hartonomous.services.atoms import AtomService, StoredAtom
from hartonomous.services.clock import new_id, utcnow
from hartonomous.store.unit_of_work import UnitOfWorkFactory

MODEL_MEDIA_TYPE = "application/x-gguf"
HEADER_MEDIA_TYPE = "application/x-gguf-header"
TENSOR_MEDIA_TYPE = "application/x-ggml-tensor"
PROFILE_MEDIA_TYPE = "text/plain"
INGESTING, READY, FAILED = "ingesting", "ready", "failed"


@dataclass(frozen=True)
class ModelPage:
    items: list[ModelRecord]
    next_cursor: str | None


@dataclass
class ModelService:
    uow_factory: UnitOfWorkFactory
    atoms: AtomService
    blobs: BlobStore
    group_bytes: int = 64 * 1024 * 1024  # bytes per storing activity

    def __post_init__(self) -> None:
        self._layout = functools.lru_cache(maxsize=8)(self._read_layout)

    def _read_layout(self, sha256: str, size: int) -> GGUFLayout:
        with open_blob(self.blobs, sha256, size) as stream:
            return read_layout(stream, size)

    def layout(self, sha256: str, size: int) -> GGUFLayout:
        """The file's parsed header (cached: every activity of an ingestion needs it)."""
        return self._layout(sha256, size)

    # -- registration ------------------------------------------------------------------------

    def register(self, tenant_id: str, atom: Atom, *, name: str | None) -> ModelRecord:
        """Check the file and record the model as ``ingesting``; InvalidModel (422) if bad."""
        layout = self.layout(atom.sha256, atom.size)
        fields = summary(layout)
        filename = atom.metadata.get("filename") if isinstance(atom.metadata, dict) else None
        label = name or fields["info"].get("name") or filename or f"model {atom.sha256[:12]}"
        now = utcnow()
        record = ModelRecord(
            id=new_id(),
            tenant_id=tenant_id,
            name=str(label)[:200],
            status=INGESTING,
            error=None,
            instance_id=None,
            sha256=atom.sha256,
            file_size=atom.size,
            source_atom_id=atom.id,
            parent_id=None,
            layers=None,
            new_bytes=None,
            profile_atom_id=None,
            created_at=now,
            updated_at=now,
            **fields,
        )
        with self.uow_factory(write=True, tenant_id=tenant_id) as uow:
            uow.models.add(record)
            uow.commit()
        return record

    def set_instance(self, tenant_id: str, model_id: str, instance_id: str) -> None:
        with self.uow_factory(write=True, tenant_id=tenant_id) as uow:
            uow.models.update(tenant_id, model_id, instance_id=instance_id)
            uow.commit()

    # -- queries -----------------------------------------------------------------------------

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

    # -- ingestion activities ----------------------------------------------------------------

    def _ingesting(self, tenant_id: str, model_id: str) -> tuple[ModelRecord, GGUFLayout]:
        record = self.get(tenant_id, model_id)
        if record.source_atom_id is None:
            raise Conflict(f"model {model_id!r} has no source file to ingest")
        return record, self.layout(record.sha256, record.file_size)

    def plan(self, tenant_id: str, model_id: str) -> dict[str, Any]:
        """Groups of part indexes (file order) of about ``group_bytes`` each."""
        _, layout = self._ingesting(tenant_id, model_id)
        groups: list[list[int]] = [[]]
        sizes = [0]
        for i, (start, end, _) in enumerate(layout.segments()):
            if sizes[-1] and sizes[-1] + (end - start) > self.group_bytes:
                groups.append([])
                sizes.append(0)
            groups[-1].append(i)
            sizes[-1] += end - start
        return {"groups": groups, "group_bytes": sizes, "bytes": layout.file_size}

    def store_parts(self, tenant_id: str, model_id: str, indexes: list[int]) -> list[list[Any]]:
        """Store these parts as atoms; ``[index, sha256, atom_id, new_bytes]`` for each
        (zero padding is not stored: ``[index, None, None, 0]``). Idempotent.

        One pass per part: read, hash and write to staging together; bytes some blob holds
        already are then discarded without an fsync, new ones made durable outside the
        write lock. The group's atoms are recorded in one transaction (one per part made
        threads queue on SQLite's write lock: 8 ms a part)."""
        record, layout = self._ingesting(tenant_id, model_id)
        segments = layout.segments()
        out: list[list[Any]] = []
        pending: list[tuple[int, StagedBlob, str, dict[str, Any]]] = []
        try:
            for i in indexes:
                start, end, tensor = segments[i]
                staged = self._stage(record.sha256, start, end, gap=tensor is None and i > 0)
                if staged is None:
                    out.append([i, None, None, 0])
                    continue
                if tensor is not None:
                    media = TENSOR_MEDIA_TYPE
                    meta: dict[str, Any] = {
                        "kind": "tensor",
                        "name": tensor.name,
                        "ggml_type": tensor.ggml_type.name,
                        "shape": list(tensor.shape),
                        "layer": tensor.layer,
                    }
                else:
                    media = HEADER_MEDIA_TYPE if i == 0 else "application/octet-stream"
                    meta = {"kind": "gguf-header" if i == 0 else "gguf-bytes"}
                pending.append((i, staged, media, meta))
            with self.uow_factory(write=True, tenant_id=tenant_id) as uow:
                for i, staged, media, meta in pending:
                    result = self.atoms.record_in(uow, tenant_id, staged, media, meta)
                    # New to this tenant: whether another tenant holds the bytes stays unseen.
                    fresh = 0 if result.deduplicated else staged.size
                    out.append([i, staged.sha256, result.atom.id, fresh])
                uow.commit()
        finally:
            for _, staged, _, _ in pending:
                staged.discard()
        return sorted(out)

    def _stage(self, file_sha: str, start: int, end: int, gap: bool) -> StagedBlob | None:
        """The part's bytes in staging, hashed (None for a gap of zeros, which is only
        alignment padding: reading it twice costs nothing)."""
        if gap and all(p.count(0) == len(p) for p in self.blobs.read(file_sha, start, end)):
            return None
        return self.atoms.stage(self.blobs.read(file_sha, start, end))

    def finish(
        self, tenant_id: str, model_id: str, stored: list[list[Any]], drop_source: bool
    ) -> dict[str, Any]:
        """Parts and status in one transaction; the uploaded file's atom goes if asked."""
        done = self.get(tenant_id, model_id)
        if done.status == READY:  # a retried activity whose first run committed
            return {"model_id": model_id, "new_bytes": done.new_bytes}
        record, layout = self._ingesting(tenant_id, model_id)
        by_index = {int(s[0]): s for s in stored}
        parts: list[ModelPart] = []
        new_bytes = 0
        for i, (start, end, t) in enumerate(layout.segments()):
            if i not in by_index:
                raise Conflict(f"part {i} of model {model_id!r} was not stored")
            _, sha, atom_id, fresh = by_index[i]
            new_bytes += int(fresh)
            kind = TENSOR if t is not None else HEADER if i == 0 else BYTES if sha else ZEROS
            parts.append(
                ModelPart(
                    ordinal=i,
                    kind=kind,
                    file_offset=start,
                    length=end - start,
                    atom_id=atom_id,
                    sha256=sha,
                    tensor_name=t.name if t else None,
                    tensor_index=t.ordinal if t else None,
                    ggml_type=t.ggml_type.name if t else None,
                    shape=list(t.shape) if t else None,
                    layer=t.layer if t else None,
                )
            )
        with self.uow_factory(write=True, tenant_id=tenant_id) as uow:
            current = uow.models.get(tenant_id, model_id)
            if current is not None and current.status == READY:
                return {"model_id": model_id, "new_bytes": current.new_bytes}  # a replay
            uow.models.add_parts(tenant_id, model_id, parts)
            source = record.source_atom_id
            if (
                drop_source
                and source is not None
                and self._drop_source(uow, tenant_id, model_id, source)
            ):
                source = None
            uow.models.update(
                tenant_id,
                model_id,
                status=READY,
                new_bytes=new_bytes,
                source_atom_id=source,
                updated_at=utcnow(),
            )
            uow.commit()
        return {
            "model_id": model_id,
            "parts": len(parts),
            "tensors": len(layout.tensors),
            "logical_bytes": record.file_size,
            "new_bytes": new_bytes,
        }

    def _drop_source(self, uow: Any, tenant_id: str, model_id: str, atom_id: str) -> bool:
        """The upload is reassembled from its parts now: its own copy of the bytes goes,
        unless another ingestion still reads it (the same file uploaded twice at once)."""
        atom = uow.atoms.get(tenant_id, atom_id)
        if atom is None or uow.models.references(tenant_id, atom_id):
            return False
        if uow.models.reading(tenant_id, atom_id, other_than=model_id):
            return False
        uow.knowledge.forget_atom(tenant_id, atom_id)
        uow.atoms.delete(tenant_id, atom_id)
        if uow.blobs.release(atom.sha256) == 0:
            self.blobs.delete(atom.sha256)  # under the write lock, as AtomService.delete
        return True

    def fail(self, tenant_id: str, model_id: str, error: str) -> None:
        with self.uow_factory(write=True, tenant_id=tenant_id) as uow:
            uow.models.update(
                tenant_id, model_id, status=FAILED, error=error[:4000], updated_at=utcnow()
            )
            uow.commit()

    def store_profile(self, tenant_id: str, model_id: str) -> StoredAtom:
        """The model's profile as a text atom (the knowledge pipeline embeds it)."""
        record = self.get(tenant_id, model_id)
        fields = {k: getattr(record, k) for k in _PROFILE_FIELDS}
        text = profile_text(record.name, fields, record.layers)
        stored = self.atoms.store_bytes(
            tenant_id=tenant_id,
            chunks=[text.encode("utf-8")],
            media_type=PROFILE_MEDIA_TYPE,
            metadata={"kind": "model-profile", "model_id": model_id, "filename": "profile.txt"},
        )
        with self.uow_factory(write=True, tenant_id=tenant_id) as uow:
            uow.models.update(tenant_id, model_id, profile_atom_id=stored.atom.id)
            uow.commit()
        return stored

    # -- slices ------------------------------------------------------------------------------

    def create_slice(
        self, tenant_id: str, model_id: str, layers: list[int], name: str | None
    ) -> ModelRecord:
        """A new model of the chosen blocks: a new header atom, the parent's tensor atoms."""
        parent, parent_parts = self.ready_parts(tenant_id, model_id)
        head = parent_parts[0]
        if head.kind != HEADER or head.sha256 is None:
            raise Conflict(f"model {model_id!r} has no header part")
        header = b"".join(self.blobs.read(head.sha256))
        with open_blob(self.blobs, head.sha256, head.length) as stream:
            layout = read_layout(stream, parent.file_size)
        plan = plan_slice(layout, header, parent_parts, layers)
        staged = self.atoms.stage(plan.header)
        digest = hashlib.sha256(plan.header)
        if len(plan.parts) > 1:
            for piece in read_parts(self.blobs, plan.parts[1:], plan.parts[1].file_offset):
                digest.update(piece)
        now = utcnow()
        fields = {k: getattr(parent, k) for k in _PROFILE_FIELDS}
        kept = [p for p in plan.parts if p.kind == TENSOR]
        fields["parameter_count"] = sum(_elements(p.shape) for p in kept)
        fields["block_count"] = plan.block_count
        quant: dict[str, int] = {}
        for p in kept:
            quant[str(p.ggml_type)] = quant.get(str(p.ggml_type), 0) + 1
        fields["quantization"] = dict(sorted(quant.items()))
        record = ModelRecord(
            id=new_id(),
            tenant_id=tenant_id,
            name=(name or f"{parent.name} [blocks {','.join(map(str, layers))}]")[:200],
            status=READY,
            error=None,
            instance_id=None,
            sha256=digest.hexdigest(),
            file_size=plan.file_size,
            source_atom_id=None,
            parent_id=parent.id,
            layers=layers,
            profile_atom_id=None,
            created_at=now,
            updated_at=now,
            new_bytes=0,
            **fields,
        )
        try:
            with self.uow_factory(write=True, tenant_id=tenant_id) as uow:
                stored = self.atoms.record_in(
                    uow, tenant_id, staged, HEADER_MEDIA_TYPE, {"kind": "gguf-header"}
                )
                fresh = 0 if stored.deduplicated else len(plan.header)
                record = replace(record, new_bytes=fresh)
                parts = [replace(plan.parts[0], atom_id=stored.atom.id, sha256=staged.sha256)]
                uow.models.add(record)
                uow.models.add_parts(tenant_id, record.id, parts + plan.parts[1:])
                uow.commit()
        finally:
            staged.discard()
        return record


_PROFILE_FIELDS = (
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


def _elements(shape: list[int] | None) -> int:
    n = 1
    for d in shape or []:
        n *= d
    return n


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
