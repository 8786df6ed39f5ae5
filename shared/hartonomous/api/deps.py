"""Typed dependency aliases shared by the routes."""

from __future__ import annotations

from typing import Annotated, cast

from fastapi import Depends, Request

from hartonomous.api.durable import durable_client
from hartonomous.bootstrap import Platform
from hartonomous.errors import ServiceUnavailable
from hartonomous.workflows.client import WorkflowClient


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
