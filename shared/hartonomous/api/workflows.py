"""``/v1/workflows``: the state of a tenant's workflow instances, events, termination."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Path, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from hartonomous.api.auth import Reader, Writer
from hartonomous.api.deps import PlatformDep, WorkflowClientDep
from hartonomous.api.problems import PROBLEM_RESPONSES
from hartonomous.errors import InvalidInput, PayloadTooLarge
from hartonomous.services.workflows import EVENT_NAME

router = APIRouter(prefix="/v1/workflows", tags=["workflows"], responses=PROBLEM_RESPONSES)
MAX_EVENT_BYTES = 64 * 1024
InstanceId = Annotated[str, Path(min_length=1, max_length=200)]


class WorkflowStatusOut(BaseModel):
    """Named as the Durable Functions status API names them."""

    model_config = ConfigDict(populate_by_name=True)

    instance_id: str = Field(alias="instanceId")
    name: str
    runtime_status: str = Field(
        alias="runtimeStatus",
        description="Pending, Running, Completed, ContinuedAsNew, Failed, Terminated",
    )
    custom_status: Any = Field(alias="customStatus", description="Progress set by the workflow")
    input: Any
    output: Any
    created_time: datetime | None = Field(alias="createdTime")
    last_updated_time: datetime | None = Field(alias="lastUpdatedTime")
    error: str | None = Field(description="Why the workflow failed, when it did")


class TerminateIn(BaseModel):
    reason: str = Field(default="terminated through the API", max_length=1000)


@router.get("/{instance_id}", response_model=WorkflowStatusOut, response_model_by_alias=True)
async def get_workflow(
    instance_id: InstanceId, principal: Reader, platform: PlatformDep, client: WorkflowClientDep
) -> WorkflowStatusOut:
    status = await platform.tenant_workflows.status(
        client, tenant_id=principal.tenant_id, instance_id=instance_id
    )
    return WorkflowStatusOut(
        instance_id=status.instance_id,
        name=status.name,
        runtime_status=status.runtime_status,
        custom_status=status.custom_status,
        input=status.input,
        output=status.output,
        created_time=status.created_time,
        last_updated_time=status.last_updated_time,
        error=status.error,
    )


@router.post(
    "/{instance_id}/events/{name}",
    status_code=202,
    response_class=Response,
    responses={409: {"description": "The workflow already ended"}},
    openapi_extra={
        "requestBody": {
            "required": False,
            "description": "The event's data: any JSON value (at most 64 KiB).",
            "content": {"application/json": {"schema": {}}},
        }
    },
)
async def raise_workflow_event(
    instance_id: InstanceId,
    name: Annotated[str, Path(min_length=1, max_length=100, pattern=EVENT_NAME.pattern)],
    request: Request,
    principal: Writer,
    platform: PlatformDep,
    client: WorkflowClientDep,
) -> Response:
    """Deliver an event to a waiting workflow (for instance an approval)."""
    body = await _read_small(request)
    try:
        data = json.loads(body) if body.strip() else None
    except json.JSONDecodeError as exc:
        raise InvalidInput(f"the event data is not valid JSON: {exc}") from exc
    await platform.tenant_workflows.raise_event(
        client, tenant_id=principal.tenant_id, instance_id=instance_id, name=name, data=data
    )
    return Response(status_code=202)


@router.post(
    "/{instance_id}/terminate",
    status_code=202,
    response_class=Response,
    responses={409: {"description": "The workflow already ended"}},
)
async def terminate_workflow(
    instance_id: InstanceId,
    principal: Writer,
    platform: PlatformDep,
    client: WorkflowClientDep,
    body: TerminateIn | None = None,
) -> Response:
    reason = (body or TerminateIn()).reason
    await platform.tenant_workflows.terminate(
        client, tenant_id=principal.tenant_id, instance_id=instance_id, reason=reason
    )
    return Response(status_code=202)


async def _read_small(request: Request) -> bytes:
    data = bytearray()
    async for chunk in request.stream():
        data += chunk
        if len(data) > MAX_EVENT_BYTES:
            raise PayloadTooLarge(
                f"event data is limited to {MAX_EVENT_BYTES} bytes", limit_bytes=MAX_EVENT_BYTES
            )
    return bytes(data)
