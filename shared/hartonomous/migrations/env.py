"""Alembic environment: online against a given connection or URL, offline to T-SQL for sql/."""

from __future__ import annotations

import sqlalchemy as sa
from alembic import context

from hartonomous.store.schema import metadata

config = context.config


def run_offline() -> None:
    context.configure(
        dialect_name=config.attributes.get("dialect_name", "mssql"),
        target_metadata=metadata,
        literal_binds=True,
        transaction_per_migration=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def _include(obj: object, name: str | None, kind: str, reflected: bool, compare_to: object) -> bool:
    """FTS5 tables are raw DDL in a migration, not part of the declared metadata."""
    return not (kind == "table" and reflected and (name or "").startswith("chunks_fts"))


def _run(conn: sa.Connection) -> None:
    context.configure(
        connection=conn,
        target_metadata=metadata,
        render_as_batch=conn.dialect.name == "sqlite",
        include_object=_include,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_online() -> None:
    conn = config.attributes.get("connection")
    if conn is not None:
        _run(conn)
        return
    engine = sa.create_engine(config.get_main_option("sqlalchemy.url") or "")
    with engine.connect() as conn:
        _run(conn)
    engine.dispose()


if context.is_offline_mode():
    run_offline()
else:
    run_online()
