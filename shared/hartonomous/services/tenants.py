"""Tenants, API keys and authentication."""

from __future__ import annotations

import dataclasses
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
from hartonomous.services.pages import Page, page_of, position_after

TENANT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
MAX_ACTIVE_KEYS = 1000  # per tenant: bounds the table and every listing


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
    return issue_key(uow_factory, tenant_id=found.id, scope=scope)


def issue_key(uow_factory: UnitOfWorkFactory, *, tenant_id: str, scope: Scope) -> IssuedKey:
    """A new key of the tenant; 409 past ``MAX_ACTIVE_KEYS`` active ones."""
    with uow_factory(write=True, tenant_id=tenant_id) as uow:
        uow.api_keys.hold_tenant(tenant_id)
        if uow.api_keys.count_active(tenant_id) >= MAX_ACTIVE_KEYS:
            raise Conflict(
                f"the tenant has {MAX_ACTIVE_KEYS} active API keys, the most it may hold;"
                " revoke one first"
            )
        issued = _issue(uow, tenant_id, scope)
        uow.commit()
    return issued


def list_keys(
    uow_factory: UnitOfWorkFactory, *, tenant_id: str, limit: int, cursor: str | None = None
) -> Page[ApiKey]:
    """Newest first, revoked ones too; never a secret (only its hash is stored)."""
    after = position_after(cursor)
    with uow_factory(write=False, tenant_id=tenant_id) as uow:
        items = uow.api_keys.list(tenant_id, limit + 1, after)
    return page_of(items, limit, lambda k: (k.created_at, k.id))


def revoke_key(
    uow_factory: UnitOfWorkFactory,
    *,
    key_id: str,
    tenant_id: str | None,
    allow_last_admin: bool = False,
) -> ApiKey:
    """Revoke the key at once (authentication reads the store on every request, so it is
    refused from the next request on, on every instance). ``tenant_id`` None: the
    operator, naming a key by id alone. Another tenant's key or an unknown one: 404;
    revoked already: the key as it is (idempotent). The tenant's last active admin key:
    409 unless ``allow_last_admin`` (the operator's override for a leaked key), since
    without one nobody could make or revoke keys through the API again."""
    with uow_factory(write=True, tenant_id=tenant_id) as uow:
        key = uow.api_keys.get(key_id, tenant_id)
        if key is None:
            raise NotFound(f"no API key with id {key_id!r}")
        if key.revoked_at is not None:
            return key
        uow.api_keys.hold_tenant(key.tenant_id)
        if (
            key.scope is Scope.ADMIN
            and not allow_last_admin
            and uow.api_keys.count_active(key.tenant_id, Scope.ADMIN) <= 1
        ):
            raise Conflict(
                f"API key {key_id!r} is the tenant's last active admin key: create another"
                " admin key first, or nobody could manage the tenant's keys again",
                key_id=key_id,
            )
        now = utcnow()
        if not uow.api_keys.revoke(key.tenant_id, key.id, now):
            # Revoked by a concurrent call between our read and the tenant lock.
            found = uow.api_keys.get(key_id, key.tenant_id)
            assert found is not None
            return found
        uow.commit()
    return dataclasses.replace(key, revoked_at=now)


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

    def keys(self, tenant_id: str, limit: int, cursor: str | None = None) -> Page[ApiKey]:
        return list_keys(self.uow_factory, tenant_id=tenant_id, limit=limit, cursor=cursor)

    def create_key(self, tenant_id: str, scope: Scope) -> IssuedKey:
        return issue_key(self.uow_factory, tenant_id=tenant_id, scope=scope)

    def revoke_key(self, tenant_id: str, key_id: str) -> ApiKey:
        return revoke_key(self.uow_factory, key_id=key_id, tenant_id=tenant_id)
