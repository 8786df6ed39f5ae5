"""A tenant's plan; the admission ports (``ports/admission.py``) re-exported with it."""

from __future__ import annotations

from dataclasses import dataclass

from hartonomous.ports.admission import Admission, GenerationPermit


@dataclass(frozen=True)
class Plan:
    """A tenant's limits. The default plan comes from settings (``HARTONOMOUS_PLAN_*``);
    the operator sets a tenant's own with ``hartonomous plan set``."""

    requests_per_second: float
    burst: int
    concurrent_generations: int
    tokens_per_minute: int


__all__ = ["Admission", "GenerationPermit", "Plan"]
