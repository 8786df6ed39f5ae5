"""Generation: receipts, the usage ledger, the outbox, and receipts on edges

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-21
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op

import hartonomous.store.schema

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _json() -> Any:
    return sa.JSON().with_variant(sa.NVARCHAR(), "mssql")


def upgrade() -> None:
    op.create_table(
        "receipts",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("tenant_id", sa.String(length=36), nullable=False),
        sa.Column("prompt_atom_id", sa.String(length=36), nullable=False),
        sa.Column("output_atom_id", sa.String(length=36), nullable=False),
        sa.Column("model_id", sa.String(length=64), nullable=False),
        sa.Column("model_sha256", sa.String(length=64), nullable=False),
        sa.Column("prompt_tokens", sa.Integer(), nullable=False),
        sa.Column("completion_tokens", sa.Integer(), nullable=False),
        sa.Column("body", _json(), nullable=False),
        sa.Column("created_at", hartonomous.store.schema.UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["output_atom_id"], ["atoms.id"], name=op.f("fk_receipts_output_atom_id_atoms")
        ),
        sa.ForeignKeyConstraint(
            ["prompt_atom_id"], ["atoms.id"], name=op.f("fk_receipts_prompt_atom_id_atoms")
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id"], ["tenants.id"], name=op.f("fk_receipts_tenant_id_tenants")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_receipts")),
    )
    op.create_index(
        op.f("ix_receipts_tenant_id_created_at"), "receipts", ["tenant_id", "created_at"]
    )
    op.create_index(
        op.f("ix_receipts_tenant_id_output_atom_id"), "receipts", ["tenant_id", "output_atom_id"]
    )
    op.create_index(
        op.f("ix_receipts_tenant_id_prompt_atom_id"), "receipts", ["tenant_id", "prompt_atom_id"]
    )
    op.create_table(
        "usage_ledger",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("tenant_id", sa.String(length=36), nullable=False),
        sa.Column("key", sa.String(length=200), nullable=False),
        sa.Column("kind", sa.String(length=40), nullable=False),
        sa.Column("quantity", sa.BigInteger(), nullable=False),
        sa.Column("unit", sa.String(length=20), nullable=False),
        sa.Column("created_at", hartonomous.store.schema.UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["tenant_id"], ["tenants.id"], name=op.f("fk_usage_ledger_tenant_id_tenants")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_usage_ledger")),
        sa.UniqueConstraint(
            "tenant_id", "key", "kind", name=op.f("uq_usage_ledger_tenant_id_key_kind")
        ),
    )
    op.create_index(
        op.f("ix_usage_ledger_tenant_id_created_at"), "usage_ledger", ["tenant_id", "created_at"]
    )
    op.create_table(
        "outbox",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("tenant_id", sa.String(length=36), nullable=False),
        sa.Column("topic", sa.String(length=100), nullable=False),
        sa.Column("key", sa.String(length=200), nullable=False),
        sa.Column("payload", _json(), nullable=False),
        sa.Column("created_at", hartonomous.store.schema.UTCDateTime(), nullable=False),
        sa.Column("published_at", hartonomous.store.schema.UTCDateTime(), nullable=True),
        sa.ForeignKeyConstraint(
            ["tenant_id"], ["tenants.id"], name=op.f("fk_outbox_tenant_id_tenants")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_outbox")),
    )
    op.create_index(op.f("ix_outbox_published_at_id"), "outbox", ["published_at", "id"])
    # Receipts on edges; the unique key gains them (SQLite rebuilds the table for this).
    with op.batch_alter_table("edges") as batch:
        batch.add_column(
            sa.Column("receipt_id", sa.String(length=36), nullable=False, server_default="")
        )
        batch.drop_constraint("uq_edges_tenant_id_src_id_kind_ordinal", type_="unique")
        batch.create_unique_constraint(
            "uq_edges_tenant_id_src_id_kind_ordinal_receipt_id",
            ["tenant_id", "src_id", "kind", "ordinal", "receipt_id"],
        )


def downgrade() -> None:
    with op.batch_alter_table("edges") as batch:
        batch.drop_constraint("uq_edges_tenant_id_src_id_kind_ordinal_receipt_id", type_="unique")
        batch.create_unique_constraint(
            "uq_edges_tenant_id_src_id_kind_ordinal", ["tenant_id", "src_id", "kind", "ordinal"]
        )
        batch.drop_column("receipt_id")
    op.drop_index(op.f("ix_outbox_published_at_id"), table_name="outbox")
    op.drop_table("outbox")
    op.drop_index(op.f("ix_usage_ledger_tenant_id_created_at"), table_name="usage_ledger")
    op.drop_table("usage_ledger")
    op.drop_index(op.f("ix_receipts_tenant_id_prompt_atom_id"), table_name="receipts")
    op.drop_index(op.f("ix_receipts_tenant_id_output_atom_id"), table_name="receipts")
    op.drop_index(op.f("ix_receipts_tenant_id_created_at"), table_name="receipts")
    op.drop_table("receipts")
