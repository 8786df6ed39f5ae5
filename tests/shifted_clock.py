"""A clock for the local Durable host that tests move forward (timers of days fire at once)."""

from __future__ import annotations

from datetime import datetime, timedelta

from hartonomous.services.clock import utcnow


class Clock:
    """Real time plus an offset a test moves forward."""

    def __init__(self) -> None:
        self.offset = timedelta()

    def __call__(self) -> datetime:
        return utcnow() + self.offset
