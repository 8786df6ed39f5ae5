"""Tenants' plans: the operator's limits per tenant (``uow.plans``), the default plan from
settings for every limit a tenant has not been given, and the bounds both obey."""

from __future__ import annotations

import time
from dataclasses import dataclass, fields
from datetime import datetime
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from hartonomous.admission.types import Plan
from hartonomous.errors import InvalidInput
from hartonomous.services.clock import utcnow
from hartonomous.settings import Settings
from hartonomous.store.schema import tenant_plans

if TYPE_CHECKING:
    from hartonomous.ports import UnitOfWorkFactory

LIMITS = tuple(f.name for f in fields(Plan))
_HOLDS = {">": float.__gt__, ">=": float.__ge__, "<": float.__lt__, "<=": float.__le__}


@dataclass(frozen=True)
class PlanRow:
    """What the operator set for a tenant; ``None``: the default plan's value."""

    tenant_id: str
    requests_per_second: float | None
    burst: int | None
    concurrent_generations: int | None
    tokens_per_minute: int | None
    updated_at: datetime


class PlanRepository:
    def __init__(self, conn: sa.Connection) -> None:
        self._conn = conn

    def get(self, tenant_id: str) -> PlanRow | None:
        t = tenant_plans
        row = self._conn.execute(t.select().where(t.c.tenant_id == tenant_id)).first()
        return PlanRow(**row._mapping) if row else None

    def set(self, tenant_id: str, limits: dict[str, Any], at: datetime) -> None:
        """Set the given limits (a ``None`` value: back to the default), keep the others."""
        t, values = tenant_plans, {**limits, "updated_at": at}
        done = self._conn.execute(t.update().where(t.c.tenant_id == tenant_id).values(values))
        if not done.rowcount:
            self._conn.execute(t.insert().values(tenant_id=tenant_id, **values))


def default_plan(settings: Settings) -> Plan:
    return Plan(**{name: getattr(settings, f"plan_{name}") for name in LIMITS})


def check_limit(name: str, value: float) -> None:
    """The bounds of the default plan's settings hold for every tenant's plan too."""
    if name not in LIMITS:
        raise InvalidInput(f"no limit named {name!r}; the limits are {', '.join(LIMITS)}")
    said, ok = [], True
    for bound in Settings.model_fields[f"plan_{name}"].metadata:
        for attr, sign in (("gt", ">"), ("ge", ">="), ("lt", "<"), ("le", "<=")):
            if (limit := getattr(bound, attr, None)) is not None:
                said.append(f"{sign} {_number(limit)}")
                ok = ok and _HOLDS[sign](float(value), float(limit))
    if not ok:
        raise InvalidInput(f"{name} must be {' and '.join(said)} (got {_number(value)})")
    if name != "requests_per_second" and value != int(value):
        raise InvalidInput(f"{name} must be a whole number (got {_number(value)})")


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


@dataclass(frozen=True)
class TenantPlan:
    """A tenant's plan in effect, and which of its limits are the default plan's."""

    plan: Plan
    defaults: frozenset[str]


# A plan read stays fresh for this long in each process: a decision is then microseconds (the
# read was 100-340 us p50 on SQLite here, more to Azure SQL), and a plan the operator sets
# holds within a second on every instance (at once in the process that set it).
FRESH_S = 1.0


class PlanBook:
    """Tenants' plans for the limiters, read through a short cache, and set by the operator."""

    def __init__(
        self, uow_factory: UnitOfWorkFactory, default: Plan, *, fresh_s: float = FRESH_S
    ) -> None:
        self._uow_factory = uow_factory
        self.default = default
        self._fresh_s = fresh_s
        self._read: dict[str, tuple[float, TenantPlan]] = {}

    def get(self, tenant_id: str) -> TenantPlan:
        now = time.monotonic()
        cached = self._read.get(tenant_id)
        if cached is not None and cached[0] > now:
            return cached[1]
        found = self._load(tenant_id)
        self._read[tenant_id] = (now + self._fresh_s, found)
        return found

    def _load(self, tenant_id: str) -> TenantPlan:
        with self._uow_factory(write=False, tenant_id=tenant_id) as uow:
            row = uow.plans.get(tenant_id)
        if row is None:
            return TenantPlan(self.default, frozenset(LIMITS))
        own = {name: getattr(row, name) for name in LIMITS if getattr(row, name) is not None}
        plan = Plan(**{name: own.get(name, getattr(self.default, name)) for name in LIMITS})
        return TenantPlan(plan, frozenset(LIMITS) - frozenset(own))

    def set(self, tenant_id: str, limits: dict[str, float | None]) -> TenantPlan:
        """Set some limits of one tenant (``None``: back to the default plan's)."""
        for name, value in limits.items():
            if value is not None:
                check_limit(name, value)
        typed = {
            name: value if value is None or name == "requests_per_second" else int(value)
            for name, value in limits.items()
        }
        if typed:
            with self._uow_factory(write=True, tenant_id=tenant_id) as uow:
                uow.plans.set(tenant_id, typed, utcnow())
                uow.commit()
        self._read.pop(tenant_id, None)
        return self.get(tenant_id)
