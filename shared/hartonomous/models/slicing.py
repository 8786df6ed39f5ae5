"""Slices: a new model of some of a ready model's blocks, without copying its tensors.

The slice gets its own header atom; its tensor parts are the parent's atoms, so it costs
the bytes of one header.
"""

from __future__ import annotations

import hashlib
from dataclasses import replace

from hartonomous.errors import Conflict
from hartonomous.models.assembly import open_blob, plan_slice, read_parts
from hartonomous.models.catalog import HEADER_MEDIA_TYPE, PROFILE_FIELDS, READY, ModelCatalog
from hartonomous.models.gguf_layout import read_layout
from hartonomous.models.store import HEADER, TENSOR, ModelRecord
from hartonomous.services.clock import new_id, utcnow


class ModelSlicing(ModelCatalog):
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
        fields = {k: getattr(parent, k) for k in PROFILE_FIELDS}
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


def _elements(shape: list[int] | None) -> int:
    n = 1
    for d in shape or []:
        n *= d
    return n
