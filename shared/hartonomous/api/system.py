"""Health and identity endpoints."""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel

from hartonomous import __version__
from hartonomous.api.auth import Reader
from hartonomous.api.deps import PlatformDep
from hartonomous.api.problems import PROBLEM_RESPONSES
from hartonomous.domain.tenants import Scope

router = APIRouter(tags=["system"])


class Health(BaseModel):
    status: str
    version: str


class Me(BaseModel):
    tenant_id: str
    tenant_name: str
    scope: Scope


@router.get("/healthz", response_model=Health)
def healthz() -> Health:
    """Liveness: no authentication, no database round trip."""
    return Health(status="ok", version=__version__)


@router.get("/v1/me", response_model=Me, responses=PROBLEM_RESPONSES)
def me(principal: Reader, platform: PlatformDep) -> Me:
    """The tenant and scope of the calling API key."""
    tenant = platform.tenants.get(principal.tenant_id)
    return Me(tenant_id=tenant.id, tenant_name=tenant.name, scope=principal.scope)
