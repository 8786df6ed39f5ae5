"""The admission contract shared by the API, the generation queue and the limiters."""

from __future__ import annotations

from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class Plan:
    """A tenant's limits. The default plan comes from settings (``HARTONOMOUS_PLAN_*``);
    the operator sets a tenant's own with ``hartonomous plan set``."""

    requests_per_second: float
    burst: int
    concurrent_generations: int
    tokens_per_minute: int


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
