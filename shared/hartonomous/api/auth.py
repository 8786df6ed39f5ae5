"""Bearer API keys: who calls (the tenant) and what they may do (the scope)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

from fastapi import Depends, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from hartonomous.api import refusal_gate
from hartonomous.api.deps import PlatformDep
from hartonomous.api.rate_headers import admitted
from hartonomous.bootstrap import Platform
from hartonomous.domain.tenants import Scope
from hartonomous.errors import Forbidden, TooManyRequests, Unauthenticated
from hartonomous.services.tenants import Principal

# auto_error=False: we answer 401 problems ourselves; the scheme still shows in /docs.
_bearer = HTTPBearer(auto_error=False, description="An API key: `Authorization: Bearer hk_...`")


async def _principal(
    request: Request,
    platform: PlatformDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    if credentials is None:
        if request.headers.get("authorization"):
            raise Unauthenticated("the Authorization header must be 'Bearer <api key>'")
        raise Unauthenticated("send your API key as 'Authorization: Bearer <api key>'")
    try:
        principal, headers = await run_in_threadpool(_admit, platform, credentials.credentials)
    except TooManyRequests as exc:
        refusal_gate.refused(request.scope, exc)  # its next ones are refused before this
        raise
    refusal_gate.admitted(request.scope)
    admitted(request.scope, headers)
    return principal


def _admit(platform: Platform, secret: str) -> tuple[Principal, dict[str, str]]:
    """Authenticate, then take one request from the tenant's bucket (429 past it; in one
    worker-thread hop): unauthenticated floods are charged to no tenant."""
    principal = platform.tenants.authenticate(secret)
    return principal, platform.admission.admit_request(principal.tenant_id)


def require(scope: Scope) -> Callable[..., object]:
    """A dependency that authenticates, admits the request under the tenant's plan (429
    past its rate) and checks the key's scope (403 when too narrow)."""

    async def dependency(principal: Annotated[Principal, Depends(_principal)]) -> Principal:
        if not principal.scope.allows(scope):
            raise Forbidden(
                f"this API key has scope '{principal.scope}'; this operation needs '{scope}'",
                required_scope=scope.value,
            )
        return principal

    return dependency


Reader = Annotated[Principal, Depends(require(Scope.READ))]
Writer = Annotated[Principal, Depends(require(Scope.WRITE))]
Admin = Annotated[Principal, Depends(require(Scope.ADMIN))]
