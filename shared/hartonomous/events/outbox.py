"""The transactional outbox: an event is written in the transaction of the change it
announces, and published after commit, at least once, in order per process.

Publishing is a port: locally the events go to in-process subscribers; on Azure the adapter
sends them to Event Hubs, from where the Neo4j projector consumes them (idempotently: an
event may arrive twice, never not at all).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from hartonomous.ports import EventPublisher as EventPublisher  # the port, importable here
from hartonomous.ports import UnitOfWorkFactory
from hartonomous.services.clock import utcnow
from hartonomous.store.repositories import batched
from hartonomous.store.schema import outbox

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Event:
    id: int
    tenant_id: str
    topic: str
    key: str
    payload: dict[str, Any]
    created_at: datetime


class OutboxRepository:
    def __init__(self, conn: sa.Connection) -> None:
        self._conn = conn

    def add(
        self, tenant_id: str, topic: str, key: str, payload: dict[str, Any], at: datetime
    ) -> None:
        self._conn.execute(
            outbox.insert(),
            {"tenant_id": tenant_id, "topic": topic, "key": key, "payload": payload,
             "created_at": at},
        )  # fmt: skip

    def pending(self, limit: int) -> list[Event]:
        rows = self._conn.execute(
            outbox.select()
            .where(outbox.c.published_at.is_(None))
            .order_by(outbox.c.id)
            .limit(limit)
        )
        return [Event(r.id, r.tenant_id, r.topic, r.key, r.payload, r.created_at) for r in rows]

    def mark_published(self, ids: list[int], at: datetime) -> None:
        for batch in batched(ids):  # Azure SQL binds at most 2,100 parameters a statement
            self._conn.execute(
                outbox.update().where(outbox.c.id.in_(batch)).values(published_at=at)
            )


class LocalEventBus:
    """The embedded publisher: calls in-process subscribers (the local graph projection,
    tests). A subscriber that raises keeps the batch pending, to be delivered again."""

    def __init__(self) -> None:
        self._subscribers: list[Callable[[Event], None]] = []

    def subscribe(self, handler: Callable[[Event], None]) -> None:
        self._subscribers.append(handler)

    def publish(self, events: list[Event]) -> None:
        for event in events:
            for handler in list(self._subscribers):
                handler(event)


class OutboxRelay:
    """Moves committed events to the publisher: woken by ``notify()`` after a commit, and
    every ``interval`` seconds for events written by other processes or left by a failure."""

    def __init__(
        self,
        uow_factory: UnitOfWorkFactory,
        publisher: EventPublisher,
        *,
        interval: float = 2.0,
        batch: int = 200,
    ) -> None:
        self._uow = uow_factory
        self.publisher = publisher
        self._interval = interval
        self._batch = batch
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def start(self) -> None:
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name="outbox-relay", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        if self._thread is not None:
            self._stop.set()
            self._wake.set()
            self._thread.join(timeout=10)
            self._thread = None

    def notify(self) -> None:
        self._wake.set()

    def drain(self) -> int:
        """Publish everything pending now; returns how many events went out."""
        sent = 0
        with self._lock:  # one relay pass at a time keeps the order
            while True:
                with self._uow(write=False) as uow:
                    events = uow.outbox.pending(self._batch)
                if not events:
                    return sent
                self.publisher.publish(events)
                with self._uow(write=True) as uow:
                    uow.outbox.mark_published([e.id for e in events], utcnow())
                    uow.commit()
                sent += len(events)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self._interval)
            self._wake.clear()
            try:
                self.drain()
            except Exception:
                log.exception("outbox relay: publishing failed; the events stay pending")
