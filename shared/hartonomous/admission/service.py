"""Admission: the request bucket, concurrent generations and tokens per minute of each
tenant's plan, over state in this process or in Redis (``state.py``)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from limits.errors import StorageError

from hartonomous.admission.headers import generation_headers, request_headers, retry_after
from hartonomous.admission.plans import PlanBook, TenantPlan
from hartonomous.admission.state import tokens_item, tokens_retry_after, unreachable
from hartonomous.admission.types import Plan
from hartonomous.errors import TooManyRequests
from hartonomous.ports.admission import LimiterState

log = logging.getLogger(__name__)

# A refused generation cannot know when one of the tenant's generations will end.
GENERATION_RETRY_S = 1.0


class Permit:
    """One generation's hold on the tenant's concurrency; counts its tokens, sending them to
    the shared counter every ``flush_every`` tokens (one Redis call per batch, not per token)
    and when the generation ends."""

    def __init__(
        self, state: LimiterState, tenant_id: str, per_minute: int, flush_every: int
    ) -> None:
        self._state, self._tenant_id = state, tenant_id
        self._item = tokens_item(per_minute)
        self._flush_every = flush_every
        self._pending = 0
        self._lock = threading.Lock()
        self.charged = 0

    def charge(self, tokens: int) -> None:
        if tokens <= 0:
            return
        with self._lock:
            self._pending += tokens
            if self._pending >= self._flush_every:
                self._flush()

    def flush(self) -> None:
        with self._lock:
            self._flush()

    def _flush(self) -> None:
        cost, self._pending = self._pending, 0
        if not cost:
            return
        self.charged += cost
        limiter = self._state.tokens
        try:
            if not limiter.hit(self._item, self._tenant_id, cost=cost):
                # Tokens that ran past the limit fill the window: refused until it slides.
                left = limiter.get_window_stats(self._item, self._tenant_id).remaining
                if left > 0:
                    limiter.hit(self._item, self._tenant_id, cost=left)
        except StorageError:  # Redis away: these tokens go uncounted, the generation goes on
            log.warning("counting %d tokens failed", cost, exc_info=True)


class AdmissionService:
    """Implements ``Admission`` (``types.py``)."""

    def __init__(self, plans: PlanBook, state: LimiterState, *, flush_every: int = 1) -> None:
        self.plans = plans
        self.state = state
        self._flush_every = flush_every

    def plan(self, tenant_id: str) -> Plan:
        return self.plans.get(tenant_id).plan

    def tenant_plan(self, tenant_id: str) -> TenantPlan:
        return self.plans.get(tenant_id)

    def admit_request(self, tenant_id: str) -> dict[str, str]:
        plan = self.plan(tenant_id)
        take = self.state.take(tenant_id, plan.requests_per_second, plan.burst)
        headers = request_headers(plan, take)
        if not take.allowed:
            raise TooManyRequests(
                f"more than {plan.burst} requests at once or {plan.requests_per_second:g} a "
                "second; retry after the Retry-After seconds",
                headers={**headers, **retry_after(take.retry_after)},
                retry_after_s=take.retry_after,
                limit="requests_per_second",
            )
        return headers

    @contextmanager
    def generation(self, tenant_id: str) -> Iterator[Permit]:
        plan = self.plan(tenant_id)
        try:
            spent = not self.state.tokens.test(tokens_item(plan.tokens_per_minute), tenant_id)
            wait = tokens_retry_after(self.state, tenant_id, plan.tokens_per_minute) if spent else 0
        except StorageError as exc:
            raise unreachable() from exc
        if spent:
            raise TooManyRequests(
                f"this tenant's generations used its {plan.tokens_per_minute} tokens a minute",
                headers={**generation_headers(plan, held=False), **retry_after(wait)},
                limit="tokens_per_minute",
            )
        lease = self.state.acquire(tenant_id, plan.concurrent_generations)
        if lease is None:
            raise TooManyRequests(
                f"this tenant has {plan.concurrent_generations} generations running or queued",
                headers={
                    **generation_headers(plan, held=True),
                    **retry_after(GENERATION_RETRY_S),
                },
                limit="concurrent_generations",
            )
        permit = Permit(self.state, tenant_id, plan.tokens_per_minute, self._flush_every)
        try:
            yield permit
        finally:
            try:
                permit.flush()
            finally:
                self.state.release(tenant_id, lease)

    def close(self) -> None:
        self.state.close()
