"""What differs between SQLite and Azure SQL below the repositories, as adapters.

``bootstrap.py`` picks one ``StoreAdapters`` per world and hands it to the unit of work,
which gives each repository its part: repositories never ask which database they are on.
"""

from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa

from hartonomous.ports import InsertOrIgnore, KeywordIndex, SessionSetup


def no_session_setup(conn: sa.Connection, tenant_id: str | None) -> None:
    """SQLite: one process, no row-level security; the queries scope by tenant."""


def tenant_session_context(conn: sa.Connection, tenant_id: str | None) -> None:
    """Azure SQL: the tenant for the row-level security policy (sql/rls.sql). Always set
    (NULL without a tenant): pooled connections keep the last value."""
    conn.exec_driver_sql("EXEC sp_set_session_context @key=N'tenant_id', @value=?", (tenant_id,))


@dataclass(frozen=True)
class StoreAdapters:
    session: SessionSetup
    insert_or_ignore: InsertOrIgnore
    keywords: KeywordIndex
