"""Typed dependency aliases shared by the routes."""

from __future__ import annotations

import re
from typing import Annotated, cast

from fastapi import Depends, Header, Request

from hartonomous.api.durable import durable_client
from hartonomous.bootstrap import Platform
from hartonomous.errors import InvalidInput, ServiceUnavailable
from hartonomous.ports import WorkflowClient


def get_platform(request: Request) -> Platform:
    platform: Platform = request.app.state.platform
    return platform


PlatformDep = Annotated[Platform, Depends(get_platform)]


def get_workflow_client(platform: PlatformDep) -> WorkflowClient:
    """The Durable client of this world: the binding's on Azure, the local host's here."""
    client = durable_client.get()
    if client is not None:
        return cast(WorkflowClient, client)
    if platform.workflows is not None:
        return platform.workflows.client
    raise ServiceUnavailable(
        "workflows are not available in this process: run `hartonomous serve`, "
        "or the Function App with its Durable client binding"
    )


WorkflowClientDep = Annotated[WorkflowClient, Depends(get_workflow_client)]


def _workflows_if_any(platform: PlatformDep) -> WorkflowClient | None:
    try:
        return get_workflow_client(platform)
    except ServiceUnavailable:
        return None


# Routes that read the store first and need the client only sometimes (a run's status).
WorkflowsIfAny = Annotated[WorkflowClient | None, Depends(_workflows_if_any)]


_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,100}")


def get_request_id(
    x_request_id: Annotated[
        str | None,
        Header(
            description="Your id for this request: a retry with the same id counts once",
            pattern=f"^{_REQUEST_ID.pattern}$",
        ),
    ] = None,
) -> str | None:
    if x_request_id is not None and not _REQUEST_ID.fullmatch(x_request_id):
        raise InvalidInput("X-Request-Id: 1 to 100 of letters, digits and . _ : -")
    return x_request_id


RequestId = Annotated[str | None, Depends(get_request_id)]
