"""The limiters' state (``admission/``): in this process, or in Redis shared by instances."""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from limits.strategies import SlidingWindowCounterRateLimiter

    from hartonomous.admission.state import Take


class LimiterState(Protocol):
    """Where admission keeps its counts: ``admission/memory.py`` (the embedded world) or
    ``admission/redis_state.py`` (Azure Managed Redis, shared by every instance)."""

    tokens: SlidingWindowCounterRateLimiter  # tokens per minute, over this state's storage

    def take(self, tenant_id: str, rate: float, burst: int) -> Take:
        """Take one request from the tenant's bucket."""
        ...

    def acquire(self, tenant_id: str, limit: int) -> str | None:
        """A lease on one of the tenant's ``limit`` concurrent generations, or ``None``."""
        ...

    def release(self, tenant_id: str, lease: str) -> None: ...

    def close(self) -> None: ...
