"""Receipts and generation edges in the relational store."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from hartonomous.store.schema import edges, receipts

USED_IN_GENERATION = "USED_IN_GENERATION"  # retrieved chunk -> output, ordinal = rank
GENERATED = "GENERATED"  # model card -> output
DERIVED_FROM = "DERIVED_FROM"  # output -> prompt


@dataclass(frozen=True)
class ReceiptRow:
    id: str
    tenant_id: str
    prompt_atom_id: str
    output_atom_id: str
    model_id: str
    model_sha256: str
    prompt_tokens: int
    completion_tokens: int
    body: dict[str, Any]
    created_at: datetime


class ReceiptRepository:
    def __init__(self, conn: sa.Connection) -> None:
        self._conn = conn

    def add(self, row: ReceiptRow, links: Sequence[tuple[str, str, str, int]]) -> None:
        """The receipt and its edges (kind, src, dst, ordinal), in the caller's transaction."""
        self._conn.execute(
            receipts.insert(),  # parameters apart: no statement built per receipt
            {"id": row.id, "tenant_id": row.tenant_id, "prompt_atom_id": row.prompt_atom_id,
             "output_atom_id": row.output_atom_id, "model_id": row.model_id,
             "model_sha256": row.model_sha256, "prompt_tokens": row.prompt_tokens,
             "completion_tokens": row.completion_tokens, "body": row.body,
             "created_at": row.created_at},
        )  # fmt: skip
        if links:
            self._conn.execute(
                edges.insert(),
                [
                    {"tenant_id": row.tenant_id, "kind": kind, "src_id": src, "dst_id": dst,
                     "ordinal": ordinal, "receipt_id": row.id, "created_at": row.created_at}
                    for kind, src, dst, ordinal in links
                ],
            )  # fmt: skip

    def get(self, tenant_id: str, receipt_id: str) -> ReceiptRow | None:
        found = self._conn.execute(
            receipts.select().where(receipts.c.tenant_id == tenant_id, receipts.c.id == receipt_id)
        ).first()
        return ReceiptRow(**found._mapping) if found else None

    def for_atom(self, tenant_id: str, atom_id: str, limit: int = 20) -> list[str]:
        """Receipts whose prompt or output this atom is, newest first."""
        return list(
            self._conn.execute(
                sa.select(receipts.c.id)
                .where(
                    receipts.c.tenant_id == tenant_id,
                    sa.or_(
                        receipts.c.output_atom_id == atom_id, receipts.c.prompt_atom_id == atom_id
                    ),
                )
                .order_by(receipts.c.created_at.desc())
                .limit(limit)
            ).scalars()
        )
