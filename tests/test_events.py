"""The outbox relay and its Event Hubs publisher. Event Hubs cannot run here: the producer
is a test double that keeps the SDK's batch contract (``create_batch``, ``add`` raising
ValueError when full, ``send_batch``), and the events are real ``EventData``."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest

from conftest import TenantKeys
from hartonomous.bootstrap import Platform
from hartonomous.events.event_hubs import EventHubsPublisher
from hartonomous.events.outbox import Event, OutboxRelay, OutboxRepository
from hartonomous.services.clock import utcnow

OUTBOX_AT = datetime(2026, 11, 21, tzinfo=UTC)


class Batch:
    def __init__(self, partition_key: str, capacity: int) -> None:
        self.partition_key, self.capacity = partition_key, capacity
        self.events: list[Any] = []

    def add(self, data) -> None:
        if len(self.events) == self.capacity:
            raise ValueError("EventDataBatch has reached its size limit")
        self.events.append(data)

    def __len__(self) -> int:
        return len(self.events)


class Producer:
    def __init__(self, capacity: int = 2, fail: bool = False) -> None:
        self.capacity, self.fail = capacity, fail
        self.sent: list[Batch] = []

    def create_batch(self, partition_key: str) -> Batch:
        return Batch(partition_key, self.capacity)

    def send_batch(self, batch: Batch) -> None:
        if self.fail:
            raise ConnectionError("the namespace is unreachable")
        self.sent.append(batch)


def event(i: int, tenant: str) -> Event:
    return Event(
        i, tenant, "generation.completed", f"r{i}", {"n": i}, datetime(2026, 11, 21, tzinfo=UTC)
    )


def test_events_go_out_in_order_partitioned_by_tenant_in_full_batches():
    producer = Producer(capacity=2)
    EventHubsPublisher(producer).publish(
        [event(1, "a"), event(2, "a"), event(3, "a"), event(4, "b")]
    )
    assert [(b.partition_key, len(b)) for b in producer.sent] == [("a", 2), ("a", 1), ("b", 1)]
    bodies = [json.loads(e.body_as_str()) for b in producer.sent for e in b.events]
    assert [b["id"] for b in bodies] == [1, 2, 3, 4]
    assert bodies[0] == {
        "id": 1,
        "tenant_id": "a",
        "topic": "generation.completed",
        "key": "r1",
        "created_at": "2026-11-21T00:00:00+00:00",
        "payload": {"n": 1},
    }
    assert producer.sent[0].events[0].content_type == "application/json"


def test_a_failed_send_leaves_the_events_pending(platform, alice):
    failing = Producer(fail=True)
    relay = OutboxRelay(platform.uow_factory, EventHubsPublisher(failing))
    with platform.uow_factory(write=True, tenant_id=alice.id) as uow:
        for i in range(3):
            uow.outbox.add(alice.id, "generation.completed", f"r{i}", {"i": i}, utcnow())
        uow.commit()
    with pytest.raises(ConnectionError):
        relay.drain()
    working = Producer(capacity=10)
    relay.publisher = EventHubsPublisher(working)
    assert relay.drain() == 3 and relay.drain() == 0  # delivered once the hub is back
    assert [json.loads(e.body_as_str())["key"] for e in working.sent[0].events] == [
        "r0",
        "r1",
        "r2",
    ]


def test_the_relay_timer_drains_the_outbox(platform, alice, monkeypatch):
    from functions import events as events_functions
    from functions import runtime

    seen: list[Event] = []
    platform.events.subscribe(seen.append)
    with platform.uow_factory(write=True, tenant_id=alice.id) as uow:
        uow.outbox.add(alice.id, "generation.completed", "r9", {}, utcnow())
        uow.commit()
    runtime.use(platform)
    try:
        timer = type("Timer", (), {"past_due": False})()
        events_functions.relay_outbox(timer)
    finally:
        runtime.use(None)
    assert [e.key for e in seen] == ["r9"]


# -- the outbox repository's contract (one adapter: the same SQL on SQLite and Azure SQL) --


def test_the_outbox_hands_out_pending_events_in_order_until_published(
    platform: Platform, alice: TenantKeys
) -> None:
    with platform.engines.write.begin() as conn:
        outbox = OutboxRepository(conn)
        for i in range(2500):
            outbox.add(alice.id, "atoms.created", f"k{i}", {"n": i, "name": "ü"}, OUTBOX_AT)
        pending = outbox.pending(3000)
        assert [e.payload["n"] for e in pending] == list(range(2500))
        assert pending[0].payload == {"n": 0, "name": "ü"} and pending[0].created_at == OUTBOX_AT
        outbox.mark_published(
            [e.id for e in pending[:2400]], OUTBOX_AT
        )  # more ids than Azure SQL binds
        assert [e.payload["n"] for e in outbox.pending(200)] == list(range(2400, 2500))
