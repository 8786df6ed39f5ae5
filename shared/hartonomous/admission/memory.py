"""The limiters' state in this process: the embedded world, one server."""

from __future__ import annotations

import threading
import time
import uuid
from collections import Counter

from limits.storage import MemoryStorage
from limits.strategies import SlidingWindowCounterRateLimiter

from hartonomous.admission.state import Take, gcra


class MemoryState:
    """Buckets (each tenant's GCRA time), generation counts and ``limits``' in-memory
    storage, under one lock: a decision is a few dictionary operations."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._tats: dict[str, float] = {}
        self._held: Counter[str] = Counter()
        self.tokens = SlidingWindowCounterRateLimiter(MemoryStorage())

    def take(self, tenant_id: str, rate: float, burst: int) -> Take:
        now = time.monotonic()
        with self._lock:
            decision, self._tats[tenant_id] = gcra(self._tats.get(tenant_id, now), now, rate, burst)
        return decision

    def acquire(self, tenant_id: str, limit: int) -> str | None:
        with self._lock:
            if self._held[tenant_id] >= limit:
                return None
            self._held[tenant_id] += 1
        return uuid.uuid4().hex

    def release(self, tenant_id: str, lease: str) -> None:
        with self._lock:
            self._held[tenant_id] -= 1
            if self._held[tenant_id] <= 0:
                del self._held[tenant_id]

    def close(self) -> None:
        self.tokens.storage.reset()
