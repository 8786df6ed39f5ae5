"""What a client is told of its limits: the IETF httpapi ``RateLimit-Policy`` and
``RateLimit`` fields (draft-ietf-httpapi-ratelimit-headers-09, Structured Field lists of
quoted policy names with parameters) and ``Retry-After`` on a refusal."""

from __future__ import annotations

import math

from hartonomous.admission.state import Take
from hartonomous.admission.types import Plan


def seconds(value: float) -> int:
    """Whole seconds, rounded up: a client that waits them is not refused again for it."""
    return max(0, math.ceil(value - 1e-9))


def request_headers(plan: Plan, take: Take) -> dict[str, str]:
    """The request bucket as a quota of ``burst`` per the seconds it takes to refill (``q``,
    ``w``), with what is left (``r``) and the seconds until it is full again (``t``)."""
    window = max(1, seconds(plan.burst / plan.requests_per_second))
    return {
        "RateLimit-Policy": f'"requests";q={plan.burst};w={window}',
        "RateLimit": f'"requests";r={take.remaining};t={seconds(take.full_in)}',
    }


def generation_headers(plan: Plan, held: bool) -> dict[str, str]:
    """A refused generation: the concurrency policy (a registered quota unit) or tokens per
    minute (``qu="tokens"``: no registered unit counts model tokens)."""
    if held:
        return {
            "RateLimit-Policy": f'"generations";q={plan.concurrent_generations};'
            'qu="concurrent-requests"',
            "RateLimit": '"generations";r=0',
        }
    return {
        "RateLimit-Policy": f'"tokens";q={plan.tokens_per_minute};w=60;qu="tokens"',
        "RateLimit": '"tokens";r=0',
    }


def retry_after(wait: float) -> dict[str, str]:
    return {"Retry-After": str(max(1, seconds(wait)))}
