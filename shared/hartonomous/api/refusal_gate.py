"""Refusals that cost next to nothing, so a tenant flooding the API cannot starve the others.

Admitting a request authenticates its key (a worker thread and a store read) and takes from
the tenant's request bucket. A flood far past the bucket was refused only after all that:
each refusal took the event loop, a worker thread and the GIL away from every other tenant
(``bench/load.py``'s fairness phase: B's ``GET /v1/me`` p95 went from 16 to 219 ms).

This pure ASGI middleware remembers, per API key, a refusal by the request bucket and the
time the bucket admits again (``TooManyRequests.retry_after_s``). Until then a request with
that key to ``/v1/`` is answered 429 on the event loop from what it remembers, before
routing, body or thread; after it one request at a time goes through (others meanwhile are
refused here, for at most ``DECIDE_S``) and either clears the memory or renews it. Nothing is
admitted that the bucket would refuse; what the gate may refuse that the bucket would take is
a request sent while another of the same key is being decided, just after a refusal window.
A key revoked during its refusal window gets 429 until that ends, then 401. The memory is
per key (a tenant's keys each decide once a window) and per process: on Azure each instance
keeps its own, and the shared bucket in Redis still decides every request that reaches it.
"""

from __future__ import annotations

import hashlib
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

from starlette.types import ASGIApp, Receive, Scope, Send

from hartonomous.admission.headers import retry_after
from hartonomous.api.problems import send_problem
from hartonomous.errors import TooManyRequests

SCOPE_KEY = "hartonomous.refusal_gate"
MAX_KEYS = 10_000  # keys remembered at once, least recently refused out first
# After the bucket admits again, one request at a time decides for this long; later the key
# is forgotten and its requests flow as any other's (a burst after a quiet spell is not
# refused here).
DECIDE_S = 1.0
# A request deciding longer than this (a slow body, an upload) lets the next one decide.
DECIDING_S = 2.0


@dataclass
class _Refused:
    until: float  # monotonic: when the bucket admits again
    detail: str
    headers: dict[str, str] = field(default_factory=dict)  # RateLimit fields of the refusal
    deciding_since: float | None = None  # a request of this key is past the gate since


@dataclass
class _Ticket:
    """What the gate hands the request (in its ASGI scope) for auth to report back on."""

    gate: RefusalGate
    key: bytes

    def admitted(self) -> None:
        self.gate._forget(self.key)

    def refused(self, error: TooManyRequests) -> None:
        if error.retry_after_s is None:
            self.gate._forget(self.key)
            return
        self.gate._remember(self.key, error)


def admitted(scope: Scope) -> None:
    """Auth admitted this request: its key is no longer refused."""
    ticket = scope.get(SCOPE_KEY)
    if ticket is not None:
        ticket.admitted()


def refused(scope: Scope, error: TooManyRequests) -> None:
    """The request bucket refused this request: refuse its key here until it would admit."""
    ticket = scope.get(SCOPE_KEY)
    if ticket is not None:
        ticket.refused(error)


def _key(scope: Scope) -> bytes | None:
    """A digest of the bearer credential (the secret itself is not kept), for the routes
    that authenticate with it (``/v1/``; not an upload's content sent with its token)."""
    if not scope["path"].startswith("/v1/") or b"token=" in scope.get("query_string", b""):
        return None
    for name, value in scope["headers"]:
        if name == b"authorization":
            scheme, _, secret = value.partition(b" ")
            if scheme.lower() != b"bearer" or not secret:
                return None
            return hashlib.blake2b(secret.strip(), digest_size=16).digest()
    return None


class RefusalGate:
    def __init__(
        self, app: ASGIApp, *, max_keys: int = MAX_KEYS, clock: Callable[[], float] | None = None
    ) -> None:
        self.app = app
        self.max_keys = max_keys
        self.clock = clock or time.monotonic
        # Touched only on the event loop (auth reports back from its async dependency).
        self._refused: OrderedDict[bytes, _Refused] = OrderedDict()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        key = _key(scope)
        if key is None:
            await self.app(scope, receive, send)
            return
        entry = self._refused.get(key)
        now = self.clock()
        if entry is not None and now >= entry.until + DECIDE_S:
            self._forget(key)  # long admitted again: no longer a flood
            entry = None
        if entry is not None:
            wait = entry.until - now
            deciding = entry.deciding_since is not None and now < entry.deciding_since + DECIDING_S
            if wait > 0 or deciding:
                error = TooManyRequests(
                    entry.detail,
                    headers={**entry.headers, **retry_after(max(wait, 0.0))},
                    retry_after_s=max(wait, 0.0),
                    limit="requests_per_second",
                )
                await send_problem(send, error, scope.get("path"))
                return
            entry.deciding_since = now
        scope[SCOPE_KEY] = _Ticket(self, key)
        try:
            await self.app(scope, receive, send)
        finally:
            if entry is not None and self._refused.get(key) is entry:
                # This request decided and auth never reported (it failed before, or was
                # refused for another reason): the next request decides.
                self._forget(key)

    @property
    def remembered(self) -> int:
        return len(self._refused)

    def _forget(self, key: bytes) -> None:
        self._refused.pop(key, None)

    def _remember(self, key: bytes, error: TooManyRequests) -> None:
        assert error.retry_after_s is not None
        headers = {k: v for k, v in error.headers.items() if k.lower().startswith("ratelimit")}
        self._refused.pop(key, None)
        # From when the refusal reaches the event loop: later than the bucket's own clock by
        # the loop's lag (milliseconds), so the gate may refuse that much longer than it.
        self._refused[key] = _Refused(self.clock() + error.retry_after_s, error.detail, headers)
        while len(self._refused) > self.max_keys:
            self._refused.popitem(last=False)
