"""The limiters' state in Redis (Azure Managed Redis), shared by every instance the Function
App scales out to. Each decision is one Lua script, atomic on the server, timed by the
server's clock (``TIME``) so instances' clocks need not agree.

Concurrent generations are leases, not a counter: a sorted set per tenant of lease ids
scored by their expiry. A holder refreshes its leases every third of ``LEASE_S``; an
instance that crashed stops refreshing, and its leases lapse after ``LEASE_S`` at most
instead of holding the tenant's slots for ever.
"""

from __future__ import annotations

import logging
import threading
import uuid
from typing import Any, cast

from limits.storage import RedisStorage
from limits.strategies import SlidingWindowCounterRateLimiter
from redis.exceptions import RedisError

from hartonomous.admission.state import Take, unreachable

log = logging.getLogger(__name__)
LEASE_S = 30.0
PREFIX = "hartonomous:admission"

# GCRA (state.py): KEYS[1] holds the time, in microseconds, at which the bucket is full, kept
# with its fraction (rounded to whole microseconds at each take, 60,000 a second ran as 58,824).
TAKE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local capacity = interval * tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local new_tat = tat + interval
if new_tat - now > capacity then
  return {0, tostring(new_tat - now - capacity), tostring(tat - now)}
end
redis.call('SET', KEYS[1], string.format('%.17g', new_tat), 'PX',
  math.floor((new_tat - now) / 1000) + 1)
return {1, tostring(capacity - (new_tat - now)), tostring(new_tat - now)}
"""

# KEYS[1]: the tenant's leases; ARGV: limit, lease ms, lease id.
ACQUIRE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[1]) then return 0 end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[3])
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[2]))
return 1
"""

# KEYS[1]: the tenant's leases; ARGV: lease ms, then the ids this instance still holds (a
# lease that lapsed meanwhile is not brought back: XX).
REFRESH = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ms = tonumber(ARGV[1])
for i = 2, #ARGV do redis.call('ZADD', KEYS[1], 'XX', now + ms, ARGV[i]) end
redis.call('PEXPIRE', KEYS[1], ms)
return 1
"""


class RedisState:
    """Buckets, leases and ``limits``' Redis storage over one connection pool."""

    def __init__(self, url: str, *, lease_s: float = LEASE_S) -> None:
        # StorageError (not redis' own errors) out of limits: the service turns it into a 503.
        storage = RedisStorage(url, key_prefix=f"{PREFIX}:limits", wrap_exceptions=True)
        self.tokens = SlidingWindowCounterRateLimiter(storage)
        self.redis = cast(Any, storage.get_connection())
        self._take = self.redis.register_script(TAKE)
        self._acquire = self.redis.register_script(ACQUIRE)
        self._refresh = self.redis.register_script(REFRESH)
        self._lease_ms = max(1, int(lease_s * 1000))
        self._held: dict[str, set[str]] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._refresher: threading.Thread | None = None

    def take(self, tenant_id: str, rate: float, burst: int) -> Take:
        interval_us = 1_000_000.0 / rate
        try:
            allowed, slack, full_in = self._take(
                keys=[f"{PREFIX}:rate:{tenant_id}"], args=[repr(interval_us), burst]
            )
        except RedisError as exc:
            raise unreachable() from exc
        slack_s, full_s = float(slack) / 1e6, float(full_in) / 1e6
        if not int(allowed):
            return Take(False, 0, slack_s, full_s)
        # Microseconds since the epoch are doubles good to a quarter microsecond: a bucket
        # holding exactly n requests may compute a hair under n (7 a second: r was burst - 2).
        return Take(True, int((float(slack) + 1.0) / interval_us), 0.0, full_s)

    def acquire(self, tenant_id: str, limit: int) -> str | None:
        lease = uuid.uuid4().hex
        args = [limit, self._lease_ms, lease]
        try:
            if not int(self._acquire(keys=[self._leases(tenant_id)], args=args)):
                return None
        except RedisError as exc:
            raise unreachable() from exc
        with self._lock:
            self._held.setdefault(tenant_id, set()).add(lease)
            if self._refresher is None:
                self._refresher = threading.Thread(
                    target=self._refresh_held, name="admission-leases", daemon=True
                )
                self._refresher.start()
        return lease

    def release(self, tenant_id: str, lease: str) -> None:
        with self._lock:
            held = self._held.get(tenant_id)
            if held is not None:
                held.discard(lease)
                if not held:
                    del self._held[tenant_id]
        try:
            self.redis.zrem(self._leases(tenant_id), lease)
        except RedisError:  # no longer refreshed, it lapses within LEASE_S; the answer stands
            log.warning("releasing a generation lease failed", exc_info=True)

    def _leases(self, tenant_id: str) -> str:
        return f"{PREFIX}:generations:{tenant_id}"

    def _refresh_held(self) -> None:
        while not self._stop.wait(self._lease_ms / 3000):
            with self._lock:
                held = {tenant: list(leases) for tenant, leases in self._held.items()}
            for tenant, leases in held.items():
                try:
                    self._refresh(keys=[self._leases(tenant)], args=[self._lease_ms, *leases])
                except Exception:  # Redis away for a moment: the next round tries again
                    log.warning("refreshing generation leases failed", exc_info=True)

    def close(self) -> None:
        """Stop refreshing (the leases still held lapse) and close the connections."""
        self._stop.set()
        if self._refresher is not None:
            self._refresher.join(timeout=5)
        self.redis.close()
