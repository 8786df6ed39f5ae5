"""Engines for the relational store.

SQLite runs in WAL mode with two engines over one file, the Datasette way: writes open with
``BEGIN IMMEDIATE`` (one writer at a time, no lock upgrades that fail mid-transaction), reads
with a plain deferred ``BEGIN`` and never block on the writer. Other databases (Azure SQL)
use one engine for both.

Writers of one process queue on a lock before ``BEGIN IMMEDIATE``: SQLite's busy handler
sleeps with backoff (up to 100 ms a try) while another connection writes, so eight activity
threads and the workflow dispatcher spent most of an ingestion asleep; a lock wakes the next
writer as soon as the last one ends. Other processes still meet the busy timeout.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Engine

BUSY_TIMEOUT_MS = 30_000
SETUP_KEY = "sqlite_setup"


@dataclass(frozen=True)
class Engines:
    write: Engine
    read: Engine

    @property
    def dialect(self) -> str:
        return self.write.dialect.name

    def dispose(self) -> None:
        self.write.dispose()
        if self.read is not self.write:
            self.read.dispose()


def _sqlite_engine(url: str, begin: str, setup: Sequence[str]) -> Engine:
    engine = sa.create_engine(
        url, connect_args={"check_same_thread": False, "timeout": BUSY_TIMEOUT_MS / 1000}
    )

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, record: Any) -> None:
        dbapi_conn.isolation_level = None  # we emit BEGIN ourselves
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        for statement in setup:  # outside any transaction, so they last the connection
            cur.execute(statement)
        cur.close()
        record.info[SETUP_KEY] = frozenset(setup)

    if begin == "BEGIN IMMEDIATE":
        writing = threading.Lock()

        @event.listens_for(engine, "begin")
        def _on_begin_write(conn: sa.Connection) -> None:
            if not writing.acquire(timeout=BUSY_TIMEOUT_MS / 1000):
                raise sa.exc.OperationalError(
                    begin, None, TimeoutError("another writer held the write lock too long")
                )
            conn.info["hartonomous_writing"] = True
            try:
                conn.exec_driver_sql(begin)
            except BaseException:
                _on_end_write(conn)
                raise

        @event.listens_for(engine, "commit")
        @event.listens_for(engine, "rollback")
        def _on_end_write(conn: sa.Connection) -> None:
            # Fired just before SQLite's COMMIT/ROLLBACK: the next writer may meet the lock
            # for that instant, and then waits in the busy handler as before.
            if conn.info.pop("hartonomous_writing", False):
                writing.release()

    else:

        @event.listens_for(engine, "begin")
        def _on_begin(conn: sa.Connection) -> None:
            conn.exec_driver_sql(begin)

    return engine


def create_engines(url: str, *, sqlite_setup: Sequence[str] = ()) -> Engines:
    """Engines for ``url``; on SQLite every new connection first runs ``sqlite_setup``
    (per-connection temp tables, for instance), and ``Connection.info[SETUP_KEY]`` holds
    those statements, so callers can tell whether they ran."""
    parsed = sa.make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        return Engines(
            write=_sqlite_engine(url, "BEGIN IMMEDIATE", sqlite_setup),
            read=_sqlite_engine(url, "BEGIN", sqlite_setup),
        )
    engine = sa.create_engine(url, pool_pre_ping=True)
    return Engines(write=engine, read=engine)
