"""Model manifests in the database: the ``models`` row and its ``model_parts`` in file order."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from hartonomous.store.schema import model_parts, models

HEADER, TENSOR, ZEROS, BYTES = "header", "tensor", "zeros", "bytes"


@dataclass(frozen=True)
class ModelRecord:
    id: str
    tenant_id: str
    name: str
    status: str
    error: str | None
    instance_id: str | None
    sha256: str
    file_size: int
    source_atom_id: str | None
    parent_id: str | None
    layers: list[int] | None
    architecture: str | None
    parameter_count: int | None
    quantization: dict[str, int] | None
    context_length: int | None
    vocab_size: int | None
    block_count: int | None
    chat_template: bool | None
    license: str | None
    new_bytes: int | None
    info: dict[str, Any] | None
    profile_atom_id: str | None
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True)
class ModelPart:
    ordinal: int
    kind: str  # header | tensor | zeros | bytes
    file_offset: int
    length: int
    atom_id: str | None = None
    sha256: str | None = None
    tensor_name: str | None = None
    tensor_index: int | None = None
    ggml_type: str | None = None
    shape: list[int] | None = None
    layer: int | None = None


_RECORD_FIELDS = [f.name for f in fields(ModelRecord)]
_PART_FIELDS = [f.name for f in fields(ModelPart)]


class ModelRepository:
    def __init__(self, conn: sa.Connection) -> None:
        self._conn = conn

    def add(self, record: ModelRecord) -> None:
        self._conn.execute(
            models.insert().values(**{k: getattr(record, k) for k in _RECORD_FIELDS})
        )

    def update(self, tenant_id: str, model_id: str, **values: Any) -> None:
        unknown = set(values) - set(_RECORD_FIELDS)
        if unknown:
            raise ValueError(f"not model fields: {sorted(unknown)}")
        self._conn.execute(
            models.update()
            .where(models.c.tenant_id == tenant_id, models.c.id == model_id)
            .values(**values)
        )

    def get(self, tenant_id: str, model_id: str) -> ModelRecord | None:
        row = self._conn.execute(
            sa.select(models).where(models.c.tenant_id == tenant_id, models.c.id == model_id)
        ).first()
        return _record(row) if row is not None else None

    def newest(
        self, tenant_id: str, limit: int, after: tuple[datetime, str] | None
    ) -> list[ModelRecord]:
        """Newest first; ``after`` is the (created_at, id) of the last row of the page before."""
        query = sa.select(models).where(models.c.tenant_id == tenant_id)
        if after is not None:
            created, model_id = after
            query = query.where(
                sa.or_(
                    models.c.created_at < created,
                    sa.and_(models.c.created_at == created, models.c.id < model_id),
                )
            )
        rows = self._conn.execute(
            query.order_by(models.c.created_at.desc(), models.c.id.desc()).limit(limit)
        )
        return [_record(r) for r in rows]

    def profiled(self, tenant_id: str, limit: int = 10_000) -> list[ModelRecord]:
        """The tenant's models that have a profile document (what capability search finds
        them by), newest first."""
        rows = self._conn.execute(
            sa.select(models)
            .where(models.c.tenant_id == tenant_id, models.c.profile_atom_id.is_not(None))
            .order_by(models.c.created_at.desc(), models.c.id.desc())
            .limit(limit)
        )
        return [_record(r) for r in rows]

    def add_parts(self, tenant_id: str, model_id: str, parts: Iterable[ModelPart]) -> None:
        rows = [
            {"model_id": model_id, "tenant_id": tenant_id}
            | {k: getattr(p, k) for k in _PART_FIELDS}
            for p in parts
        ]
        if rows:
            self._conn.execute(model_parts.insert(), rows)

    def parts(self, tenant_id: str, model_id: str) -> list[ModelPart]:
        rows = self._conn.execute(
            sa.select(*(model_parts.c[k] for k in _PART_FIELDS))
            .where(model_parts.c.tenant_id == tenant_id, model_parts.c.model_id == model_id)
            .order_by(model_parts.c.ordinal)
        )
        return [ModelPart(**r._mapping) for r in rows]

    def references(self, tenant_id: str, atom_id: str) -> int:
        """How many model parts use this atom (such atoms cannot be deleted)."""
        return int(
            self._conn.execute(
                sa.select(sa.func.count())
                .select_from(model_parts)
                .where(model_parts.c.tenant_id == tenant_id, model_parts.c.atom_id == atom_id)
            ).scalar_one()
        )

    def reading(self, tenant_id: str, atom_id: str, *, other_than: str) -> int:
        """Other models still ingesting from this source atom."""
        return int(
            self._conn.execute(
                sa.select(sa.func.count())
                .select_from(models)
                .where(
                    models.c.tenant_id == tenant_id,
                    models.c.source_atom_id == atom_id,
                    models.c.status == "ingesting",
                    models.c.id != other_than,
                )
            ).scalar_one()
        )


def _record(row: sa.Row[Any]) -> ModelRecord:
    return ModelRecord(**{k: row._mapping[k] for k in _RECORD_FIELDS})
