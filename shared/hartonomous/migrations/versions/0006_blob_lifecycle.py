"""Blob lifecycle: the durable deletion queue

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-28
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import hartonomous.store.schema

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "blob_deletions",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("queued_at", hartonomous.store.schema.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_blob_deletions")),
    )
    op.create_index(op.f("ix_blob_deletions_sha256"), "blob_deletions", ["sha256"])


def downgrade() -> None:
    op.drop_index(op.f("ix_blob_deletions_sha256"), table_name="blob_deletions")
    op.drop_table("blob_deletions")
