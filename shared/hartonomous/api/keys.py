"""A tenant's API keys: list, create, revoke (admin scope).

A key's secret is shown once, in the answer that creates it; only its SHA-256 is stored, so
no listing can show it. Authentication reads the store on every request (no cache), so a
revoked key is refused from the next request on, on every instance.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Path, Query, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from hartonomous.api.auth import Admin
from hartonomous.api.deps import PlatformDep
from hartonomous.api.problems import PROBLEM_RESPONSES, documented
from hartonomous.domain.tenants import ApiKey, Scope

router = APIRouter(prefix="/v1/keys", tags=["keys"], responses=PROBLEM_RESPONSES)

KeyId = Annotated[str, Path(min_length=1, max_length=100)]
Limit = Annotated[int, Query(ge=1, le=100, description="Items per page")]
Cursor = Annotated[
    str | None, Query(max_length=512, description="`next_cursor` of the previous page")
]


class KeyOut(BaseModel):
    id: str
    scope: Scope
    display_prefix: str = Field(description="The secret's first characters, to tell keys apart")
    created_at: datetime
    revoked_at: datetime | None

    @classmethod
    def of(cls, key: ApiKey) -> KeyOut:
        return cls(
            id=key.id,
            scope=key.scope,
            display_prefix=key.display_prefix,
            created_at=key.created_at,
            revoked_at=key.revoked_at,
        )


class CreatedKeyOut(KeyOut):
    secret: str = Field(description="The key itself: shown this once, never again")


class KeyPage(BaseModel):
    items: list[KeyOut]
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page")


class KeyIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    scope: Scope = Field(description="What the key may do: read < write < admin")


@router.get("", response_model=KeyPage)
def list_keys(
    principal: Admin, platform: PlatformDep, limit: Limit = 20, cursor: Cursor = None
) -> KeyPage:
    """The tenant's keys, newest first, revoked ones too; never their secrets."""
    page = platform.tenants.keys(principal.tenant_id, limit, cursor)
    return KeyPage(items=[KeyOut.of(k) for k in page.items], next_cursor=page.next_cursor)


@router.post(
    "",
    status_code=201,
    response_model=CreatedKeyOut,
    responses=documented(409, "The tenant holds the most active keys it may"),
)
def create_key(body: KeyIn, principal: Admin, platform: PlatformDep) -> JSONResponse:
    """A new key of this tenant; `secret` is in this answer only (store it now)."""
    issued = platform.tenants.create_key(principal.tenant_id, body.scope)
    out = CreatedKeyOut(**KeyOut.of(issued.key).model_dump(), secret=issued.secret)
    return JSONResponse(
        out.model_dump(mode="json"),
        status_code=201,
        headers={"Location": f"/v1/keys/{issued.key.id}", "Cache-Control": "no-store"},
    )


@router.delete(
    "/{key_id}",
    status_code=204,
    response_class=Response,
    responses={
        **documented(404, "No such key of this tenant"),
        **documented(409, "The tenant's last active admin key"),
    },
)
def revoke_key(key_id: KeyId, principal: Admin, platform: PlatformDep) -> Response:
    """Revoke a key: from the next request on it is `401`, on every instance. The calling
    key may revoke itself (this answer still comes; its next request is `401`). The last
    active admin key is refused (`409`): create another admin key first. Revoked already:
    `204` again."""
    platform.tenants.revoke_key(principal.tenant_id, key_id)
    return Response(status_code=204)
