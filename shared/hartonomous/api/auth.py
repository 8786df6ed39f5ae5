"""Bearer API keys: who calls (the tenant) and what they may do (the scope)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

from fastapi import Depends, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from hartonomous.api.deps import PlatformDep
from hartonomous.domain.tenants import Scope
from hartonomous.errors import Forbidden, Unauthenticated
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
    return await run_in_threadpool(platform.tenants.authenticate, credentials.credentials)


def require(scope: Scope) -> Callable[..., object]:
    """A dependency that authenticates and checks the key's scope (403 when too narrow)."""

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
