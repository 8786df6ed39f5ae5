"""Publishing committed events (``events/``)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from hartonomous.events.outbox import Event


class EventPublisher(Protocol):
    """Where the outbox relay sends committed events: in-process subscribers, Event Hubs."""

    def publish(self, events: list[Event]) -> None:
        """Deliver the events (in order) or raise; raising leaves them pending."""
