"""The outbox's Azure publisher: events to Event Hubs, where the graph projector reads them.

Each tenant's events share a partition key, so they stay in order for their consumers; a
batch that fills up is sent and a new one started. Sending raises on failure, which leaves
the events pending in the outbox for the next relay pass (at least once, never lost).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from itertools import groupby
from typing import Any

from hartonomous.events.outbox import Event


def encode(event: Event) -> str:
    return json.dumps(
        {"id": event.id, "tenant_id": event.tenant_id, "topic": event.topic, "key": event.key,
         "created_at": event.created_at.isoformat(), "payload": event.payload},
        separators=(",", ":"),
    )  # fmt: skip


class EventHubsPublisher:
    def __init__(self, producer: Any) -> None:
        self._producer = producer  # azure.eventhub.EventHubProducerClient (or a test double)

    @classmethod
    def from_connection_string(cls, connection_string: str, hub: str) -> EventHubsPublisher:
        from azure.eventhub import EventHubProducerClient

        return cls(
            EventHubProducerClient.from_connection_string(connection_string, eventhub_name=hub)
        )

    def publish(self, events: list[Event]) -> None:
        for tenant_id, group in groupby(events, key=lambda e: e.tenant_id):
            for batch in self._batches(tenant_id, group):
                self._producer.send_batch(batch)

    def _batches(self, tenant_id: str, events: Iterator[Event]) -> Iterator[Any]:
        from azure.eventhub import EventData

        batch = self._producer.create_batch(partition_key=tenant_id)
        for event in events:
            data = EventData(encode(event))
            data.content_type = "application/json"
            try:
                batch.add(data)
            except ValueError:  # full: send what it holds, start the next
                if len(batch) == 0:
                    raise
                yield batch
                batch = self._producer.create_batch(partition_key=tenant_id)
                batch.add(data)
        if len(batch):
            yield batch

    def close(self) -> None:
        self._producer.close()
