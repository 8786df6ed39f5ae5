"""Upload sessions: big files sent straight to storage before they become atoms

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-28
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op

import hartonomous.store.schema

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _json() -> Any:
    return sa.JSON().with_variant(sa.NVARCHAR(), "mssql")


def upgrade() -> None:
    op.create_table(
        "upload_sessions",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("tenant_id", sa.String(length=36), nullable=False),
        sa.Column("purpose", sa.String(length=16), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("media_type", sa.String(length=255), nullable=False),
        sa.Column("metadata", _json(), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("claim_id", sa.String(length=32), nullable=True),
        sa.Column("claimed_until", hartonomous.store.schema.UTCDateTime(), nullable=True),
        sa.Column("atom_id", sa.String(length=36), nullable=True),
        sa.Column("deduplicated", sa.Boolean(), nullable=True),
        sa.Column("instance_id", sa.String(length=100), nullable=True),
        sa.Column("model_id", sa.String(length=64), nullable=True),
        sa.Column("error", sa.String(length=2000), nullable=True),
        sa.Column("created_at", hartonomous.store.schema.UTCDateTime(), nullable=False),
        sa.Column("expires_at", hartonomous.store.schema.UTCDateTime(), nullable=False),
        sa.Column("completed_at", hartonomous.store.schema.UTCDateTime(), nullable=True),
        sa.ForeignKeyConstraint(
            ["tenant_id"], ["tenants.id"], name=op.f("fk_upload_sessions_tenant_id_tenants")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_upload_sessions")),
    )
    op.create_index(op.f("ix_upload_sessions_expires_at"), "upload_sessions", ["expires_at"])


def downgrade() -> None:
    op.drop_index(op.f("ix_upload_sessions_expires_at"), table_name="upload_sessions")
    op.drop_table("upload_sessions")
