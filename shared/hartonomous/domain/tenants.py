"""Tenants and their API keys."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

KEY_PREFIX = "hk_"


class Scope(StrEnum):
    """Ordered: a key with a scope may do everything the scopes below it may."""

    READ = "read"
    WRITE = "write"
    ADMIN = "admin"

    def allows(self, needed: Scope) -> bool:
        order = list(Scope)
        return order.index(self) >= order.index(needed)


@dataclass(frozen=True, slots=True)
class Tenant:
    id: str
    name: str
    created_at: datetime


@dataclass(frozen=True, slots=True)
class ApiKey:
    id: str
    tenant_id: str
    scope: Scope
    display_prefix: str
    created_at: datetime
    revoked_at: datetime | None = None


def new_api_key() -> str:
    """256 bits from the OS CSPRNG; shown once, never stored."""
    return KEY_PREFIX + secrets.token_urlsafe(32)


def hash_api_key(key: str) -> str:
    """Keys are high-entropy random strings, so one SHA-256 suffices (no slow KDF needed)."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()
