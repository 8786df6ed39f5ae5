"""Admission's ports: what the API and the generation queue ask of it, and where its limiters
keep their state (in this process, or in Redis shared by instances)."""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from limits.strategies import SlidingWindowCounterRateLimiter

    from hartonomous.admission.state import Take
    from hartonomous.admission.types import Plan


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


class GenerationPermit(Protocol):
    """Held while one generation is queued or running (it counts toward the tenant's
    concurrent generations until the context exits)."""

    def charge(self, tokens: int) -> None:
        """Count model tokens (prompt and output, as they run) toward tokens per minute."""
        ...


class Admission(Protocol):
    def plan(self, tenant_id: str) -> Plan: ...

    def admit_request(self, tenant_id: str) -> dict[str, str]:
        """Take one request from the tenant's bucket: the RateLimit/RateLimit-Policy headers
        to send, or ``TooManyRequests`` with them and ``Retry-After``."""
        ...

    def generation(self, tenant_id: str) -> AbstractContextManager[GenerationPermit]:
        """A permit for one generation: ``TooManyRequests`` (with ``Retry-After``) when the
        tenant has ``concurrent_generations`` already, or spent its tokens this minute."""
        ...
