"""Model ingestion: registration, then the workflow's activities (``workflow.py``).

Registration parses and checks the header synchronously (a bad file is a 422 before any
work starts). The activities then store the file's parts in groups: each part is hashed
first and written only when no blob holds those bytes yet, so a fine-tune or a re-upload
costs reads, not writes. The parts and the model's ``ready`` status appear in one
transaction at the end.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from hartonomous.domain.atoms import Atom
from hartonomous.errors import Conflict
from hartonomous.models.catalog import (
    FAILED,
    HEADER_MEDIA_TYPE,
    INGESTING,
    PROFILE_FIELDS,
    PROFILE_MEDIA_TYPE,
    READY,
    TENSOR_MEDIA_TYPE,
    ModelCatalog,
)
from hartonomous.models.gguf_layout import GGUFLayout
from hartonomous.models.profile import profile_text, summary
from hartonomous.models.store import BYTES, HEADER, TENSOR, ZEROS, ModelPart, ModelRecord
from hartonomous.ports import StagedBlob, UnitOfWork
from hartonomous.services.atoms import StoredAtom
from hartonomous.services.clock import new_id, utcnow


@dataclass
class ModelIngestion(ModelCatalog):
    group_bytes: int = 64 * 1024 * 1024  # bytes per storing activity

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

    def _drop_source(self, uow: UnitOfWork, tenant_id: str, model_id: str, atom_id: str) -> bool:
        """The upload is reassembled from its parts now: its own copy of the bytes goes,
        unless another ingestion still reads it (the same file uploaded twice at once)."""
        atom = uow.atoms.get(tenant_id, atom_id)
        if atom is None or uow.models.references(tenant_id, atom_id):
            return False
        if uow.models.reading(tenant_id, atom_id, other_than=model_id):
            return False
        uow.knowledge.forget_atom(tenant_id, atom_id)
        uow.atoms.delete(tenant_id, atom_id)
        uow.blobs.release(atom.sha256)  # at zero, queued: deleted after the commit
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
        fields = {k: getattr(record, k) for k in PROFILE_FIELDS}
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
