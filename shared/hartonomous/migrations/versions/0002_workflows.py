"""Workflow ownership, and the local Durable host's storage (SQLite only)

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-21
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import hartonomous.store.schema

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "workflow_runs",
        sa.Column("instance_id", sa.String(length=200), nullable=False),
        sa.Column("tenant_id", sa.String(length=36), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column(
            "created_at", hartonomous.store.schema.UTCDateTime(timezone=True), nullable=False
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id"], ["tenants.id"], name=op.f("fk_workflow_runs_tenant_id_tenants")
        ),
        sa.PrimaryKeyConstraint("instance_id", name=op.f("pk_workflow_runs")),
    )
    with op.batch_alter_table("workflow_runs", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_workflow_runs_tenant_id_created_at"),
            ["tenant_id", "created_at"],
            unique=False,
        )

    # The Durable backend on Azure keeps its own state: these tables exist only locally.
    if op.get_context().dialect.name != "sqlite":
        return
    op.create_table(
        "durable_history",
        sa.Column("instance_id", sa.String(length=200), nullable=False),
        sa.Column("seq", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("event", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("instance_id", "seq", name=op.f("pk_durable_history")),
        info={"local_only": True},
    )
    op.create_table(
        "durable_instances",
        sa.Column("instance_id", sa.String(length=200), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("execution_id", sa.String(length=36), nullable=False),
        sa.Column("runtime_status", sa.String(length=20), nullable=False),
        sa.Column("input", sa.Text(), nullable=True),
        sa.Column("output", sa.Text(), nullable=True),
        sa.Column("custom_status", sa.Text(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("parent_instance_id", sa.String(length=200), nullable=True),
        sa.Column("parent_event_id", sa.Integer(), nullable=True),
        sa.Column("parent_execution_id", sa.String(length=36), nullable=True),
        sa.Column("host_state", sa.Text(), nullable=False),
        sa.Column(
            "created_at", hartonomous.store.schema.UTCDateTime(timezone=True), nullable=False
        ),
        sa.Column(
            "last_updated_at", hartonomous.store.schema.UTCDateTime(timezone=True), nullable=False
        ),
        sa.PrimaryKeyConstraint("instance_id", name=op.f("pk_durable_instances")),
        info={"local_only": True},
    )
    with op.batch_alter_table("durable_instances", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_durable_instances_runtime_status"), ["runtime_status"], unique=False
        )

    op.create_table(
        "durable_messages",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("instance_id", sa.String(length=200), nullable=False),
        sa.Column("kind", sa.String(length=30), nullable=False),
        sa.Column("event_id", sa.Integer(), nullable=True),
        sa.Column("payload", sa.Text(), nullable=False),
        sa.Column(
            "visible_at", hartonomous.store.schema.UTCDateTime(timezone=True), nullable=False
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_durable_messages")),
        info={"local_only": True},
        sqlite_autoincrement=True,
    )
    with op.batch_alter_table("durable_messages", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_durable_messages_visible_at"), ["visible_at"], unique=False
        )

    op.create_table(
        "durable_work",
        sa.Column("instance_id", sa.String(length=200), nullable=False),
        sa.Column("event_id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("execution_id", sa.String(length=36), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("input", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("instance_id", "event_id", name=op.f("pk_durable_work")),
        info={"local_only": True},
    )


def downgrade() -> None:
    if op.get_context().dialect.name == "sqlite":
        for table in ("durable_work", "durable_messages", "durable_instances", "durable_history"):
            op.drop_table(table)
    with op.batch_alter_table("workflow_runs", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_workflow_runs_tenant_id_created_at"))
    op.drop_table("workflow_runs")
