"""Tenants, API keys and authentication."""

from __future__ import annotations

import re
from dataclasses import dataclass

from hartonomous.domain.tenants import (
    KEY_PREFIX,
    ApiKey,
    Scope,
    Tenant,
    hash_api_key,
    new_api_key,
)
from hartonomous.errors import Conflict, InvalidInput, NotFound, Unauthenticated
from hartonomous.ports import UnitOfWork, UnitOfWorkFactory
from hartonomous.services.clock import new_id, utcnow

TENANT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


@dataclass(frozen=True)
class IssuedKey:
    """A freshly created key: ``secret`` is shown once and never stored."""

    key: ApiKey
    secret: str


@dataclass(frozen=True)
class Principal:
    """Who is calling: taken from the credential, never from the request body."""

    tenant_id: str
    scope: Scope
    key_id: str


def _issue(uow: UnitOfWork, tenant_id: str, scope: Scope) -> IssuedKey:
    secret = new_api_key()
    key = ApiKey(
        id=new_id(),
        tenant_id=tenant_id,
        scope=scope,
        display_prefix=secret[: len(KEY_PREFIX) + 6],
        created_at=utcnow(),
    )
    uow.api_keys.add(key, hash_api_key(secret))
    return IssuedKey(key=key, secret=secret)


def create_tenant(uow_factory: UnitOfWorkFactory, *, name: str) -> tuple[Tenant, IssuedKey]:
    """A new tenant and its first key, with admin scope."""
    if not TENANT_NAME.match(name):
        raise InvalidInput(
            f"tenant name {name!r} must be 1-100 characters of letters, digits, '.', '_' or '-',"
            " starting with a letter or digit"
        )
    with uow_factory(write=True) as uow:
        if uow.tenants.get_by_name(name) is not None:
            raise Conflict(f"a tenant named {name!r} already exists")
        tenant = Tenant(id=new_id(), name=name, created_at=utcnow())
        uow.tenants.add(tenant)
        issued = _issue(uow, tenant.id, Scope.ADMIN)
        uow.commit()
    return tenant, issued


def get_tenant(uow_factory: UnitOfWorkFactory, *, tenant_id: str) -> Tenant:
    with uow_factory(write=False) as uow:
        tenant = uow.tenants.get(tenant_id)
    if tenant is None:
        raise NotFound(f"no tenant with id {tenant_id!r}")
    return tenant


def find_tenant(uow_factory: UnitOfWorkFactory, *, name_or_id: str) -> Tenant:
    """For operators: the tenant with this id, else the one with this name."""
    with uow_factory(write=False) as uow:
        tenant = uow.tenants.get(name_or_id) or uow.tenants.get_by_name(name_or_id)
    if tenant is None:
        raise NotFound(f"no tenant with id or name {name_or_id!r}")
    return tenant


def create_key(uow_factory: UnitOfWorkFactory, *, tenant: str, scope: Scope) -> IssuedKey:
    found = find_tenant(uow_factory, name_or_id=tenant)
    with uow_factory(write=True, tenant_id=found.id) as uow:
        issued = _issue(uow, found.id, scope)
        uow.commit()
    return issued


def authenticate(uow_factory: UnitOfWorkFactory, *, secret: str) -> Principal:
    if not secret.startswith(KEY_PREFIX):
        raise Unauthenticated("the API key is not a Hartonomous key (they start with 'hk_')")
    with uow_factory(write=False) as uow:
        key = uow.api_keys.find_active_by_hash(hash_api_key(secret))
    if key is None:
        raise Unauthenticated("the API key is unknown or revoked")
    return Principal(tenant_id=key.tenant_id, scope=key.scope, key_id=key.id)


@dataclass
class TenantService:
    """The functions above bound to one platform's unit of work: what routes call."""

    uow_factory: UnitOfWorkFactory

    def get(self, tenant_id: str) -> Tenant:
        return get_tenant(self.uow_factory, tenant_id=tenant_id)

    def authenticate(self, secret: str) -> Principal:
        return authenticate(self.uow_factory, secret=secret)
