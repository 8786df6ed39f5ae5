"""Where the limiters keep their counts: in this process (``memory.py``, the embedded world)
or in Redis, shared by every instance (``redis_state.py``, Azure). ``bootstrap.py`` chooses.

The request rate is a token bucket computed as GCRA (the generic cell rate algorithm: one
number per tenant, the time the bucket would be full again). The ``limits`` library has fixed
window, moving window and sliding window counter strategies, none a token bucket: its moving
window with ``burst`` per ``burst / rate`` seconds keeps ``burst`` timestamps per tenant (up to
a million here) and takes whole seconds as windows; GCRA is a token bucket exactly, with a
refill of any rate. Tokens per minute are ``limits``' sliding window counter.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, cast

from limits import RateLimitItemPerMinute
from limits.storage.base import SlidingWindowCounterSupport

from hartonomous.errors import ServiceUnavailable

if TYPE_CHECKING:
    from hartonomous.ports.admission import LimiterState


@dataclass(frozen=True)
class Take:
    """One request's decision: ``remaining`` whole requests left in the bucket, seconds until
    one more is allowed (``retry_after``, 0 when taken) and until the bucket is full."""

    allowed: bool
    remaining: int
    retry_after: float
    full_in: float


def gcra(tat: float, now: float, rate: float, burst: int) -> tuple[Take, float]:
    """A token bucket of ``burst`` refilled at ``rate`` per second, as GCRA: ``tat`` is when
    the bucket would be full; the decision and the new ``tat``."""
    interval = 1.0 / rate
    capacity = interval * burst
    # How far from full the bucket is, before and after this request, in seconds. Worked as
    # offsets from now, not as times: a monotonic clock at 68,780 s holds a 1/60,000 s
    # interval only to 1e-6 of itself, which made a full bucket of 10 say 8 left.
    ahead = max(tat - now, 0.0)
    new_ahead = ahead + interval
    if new_ahead > capacity + 1e-9:
        return Take(False, 0, new_ahead - capacity, ahead), tat
    remaining = math.floor((capacity - new_ahead) / interval + 1e-9)
    return Take(True, remaining, 0.0, new_ahead), now + new_ahead


def tokens_item(per_minute: int) -> RateLimitItemPerMinute:
    return RateLimitItemPerMinute(per_minute, namespace="tokens")


def tokens_retry_after(state: LimiterState, tenant_id: str, per_minute: int) -> float:
    """Seconds until the sliding window counter lets one more token in: while the current
    minute holds less than the limit, until the previous minute's weight has slid out
    enough; otherwise past the minute's end, until this minute's weight has."""
    item = tokens_item(per_minute)
    storage = cast(SlidingWindowCounterSupport, state.tokens.storage)
    window = item.get_expiry()
    prev, prev_ttl, cur, cur_ttl = storage.get_sliding_window(item.key_for(tenant_id), window)
    room = per_minute - 1  # floor(weighted) + 1 <= limit
    if cur <= room:
        return 0.0 if prev == 0 else max(0.0, float(prev_ttl) - (room - cur) * window / prev)
    return max(0.0, float(cur_ttl) - window) + window * (1 - room / cur)


def unreachable() -> ServiceUnavailable:
    """The shared state (Redis) did not answer a decision: a 503 to retry shortly, not an
    unexplained 500."""
    return ServiceUnavailable(
        "the rate limiters' shared state did not answer; try again shortly",
        headers={"Retry-After": "1"},
    )
