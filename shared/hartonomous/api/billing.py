"""The tenant's plan: the limits admission holds it to (docs/serving.md)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, Field

from hartonomous.api.auth import Reader
from hartonomous.api.deps import PlatformDep
from hartonomous.api.problems import PROBLEM_RESPONSES

router = APIRouter(tags=["billing"])


class PlanOut(BaseModel):
    requests_per_second: float = Field(description="Requests a second, on average")
    burst: int = Field(description="Requests at once after a pause (the bucket's size)")
    concurrent_generations: int = Field(description="Generations running or queued at once")
    tokens_per_minute: int = Field(description="Model tokens (prompt and output) a minute")
    defaults: list[str] = Field(
        description="The limits that are the default plan's (the others were set for you)"
    )


@router.get("/v1/billing/plan", response_model=PlanOut, responses=PROBLEM_RESPONSES)
async def plan(principal: Reader, platform: PlatformDep) -> PlanOut:
    """Your plan's limits; over one, a request is answered 429 with Retry-After."""
    found = await run_in_threadpool(platform.admission.tenant_plan, principal.tenant_id)
    p = found.plan
    return PlanOut(
        requests_per_second=p.requests_per_second,
        burst=p.burst,
        concurrent_generations=p.concurrent_generations,
        tokens_per_minute=p.tokens_per_minute,
        defaults=sorted(found.defaults),
    )
