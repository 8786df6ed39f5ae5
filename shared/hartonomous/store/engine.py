"""Engines for the relational store.

SQLite runs in WAL mode with two engines over one file, the Datasette way: writes open with
``BEGIN IMMEDIATE`` (one writer at a time, no lock upgrades that fail mid-transaction), reads
with a plain deferred ``BEGIN`` and never block on the writer. Other databases (Azure SQL)
use one engine for both.

Writers of one process queue on a lock before ``BEGIN IMMEDIATE``: SQLite's busy handler
sleeps with backoff (up to 100 ms a try) while another connection writes, so eight activity
threads and the workflow dispatcher spent most of an ingestion asleep; a lock wakes the next
writer as soon as the last one ends. Other processes still meet the busy timeout.

WAL checkpoints run on a background thread (``PRAGMA wal_checkpoint(PASSIVE)`` twice a
second), not inside whichever commit crosses SQLite's 1,000-page threshold: that commit
paid the checkpoint's copy and fsync, several milliseconds on one request in fifty (receipt
persistence p95 8-12 ms with automatic checkpoints, see docs/generation.md).
"""

from __future__ import annotations

import contextlib
import sqlite3
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


class Checkpointer:
    """Moves the WAL into the database file off the commit path (see the module doc)."""

    def __init__(self, database: str, interval: float = 0.5) -> None:
        self._database, self._interval = database, interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sqlite-checkpoint", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        conn = sqlite3.connect(self._database, timeout=BUSY_TIMEOUT_MS / 1000)
        try:
            while not self._stop.wait(self._interval):
                with contextlib.suppress(sqlite3.Error):  # busy or locked: next round
                    conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
        finally:
            conn.close()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


@dataclass(frozen=True)
class Engines:
    write: Engine
    read: Engine
    checkpointer: Checkpointer | None = None

    @property
    def dialect(self) -> str:
        return self.write.dialect.name

    def dispose(self) -> None:
        if self.checkpointer is not None:
            self.checkpointer.stop()
        self.write.dispose()
        if self.read is not self.write:
            self.read.dispose()


def _sqlite_engine(url: str, begin: str, setup: Sequence[str], checkpoints_apart: bool) -> Engine:
    engine = sa.create_engine(
        url, connect_args={"check_same_thread": False, "timeout": BUSY_TIMEOUT_MS / 1000}
    )

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, record: Any) -> None:
        dbapi_conn.isolation_level = None  # we emit BEGIN ourselves
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")
        if checkpoints_apart:
            cur.execute("PRAGMA wal_autocheckpoint=0")  # the Checkpointer's job
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
        database = parsed.database if parsed.database not in (None, "", ":memory:") else None
        file_backed = database is not None
        if database is not None:
            Path(database).parent.mkdir(parents=True, exist_ok=True)
        return Engines(
            write=_sqlite_engine(url, "BEGIN IMMEDIATE", sqlite_setup, file_backed),
            read=_sqlite_engine(url, "BEGIN", sqlite_setup, file_backed),
            checkpointer=Checkpointer(database) if database is not None else None,
        )
    engine = sa.create_engine(url, pool_pre_ping=True)
    return Engines(write=engine, read=engine)
