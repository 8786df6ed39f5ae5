"""The one catch-all HTTP function: every route goes to the FastAPI app through ASGI.

It also takes the Durable client binding, so routes can start orchestrations; the client is
handed to the app through a context variable for the duration of the request.
"""

from __future__ import annotations

from functools import cache

import azure.durable_functions as df
import azure.functions as func
from fastapi import FastAPI

from functions import runtime
from hartonomous.api.app import create_app
from hartonomous.api.durable import durable_client

bp = df.Blueprint()


@cache
def _asgi() -> func.AsgiMiddleware:
    """Built on the first request, not at import (indexing and cold starts stay fast)."""
    app: FastAPI = create_app(runtime.platform())
    return func.AsgiMiddleware(app)


@bp.route(
    route="{*route}",
    methods=["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"],
    auth_level=func.AuthLevel.ANONYMOUS,
)
@bp.durable_client_input(client_name="client")
async def http_api(
    req: func.HttpRequest, context: func.Context, client: df.DurableOrchestrationClient
) -> func.HttpResponse:
    token = durable_client.set(client)
    try:
        response: func.HttpResponse = await _asgi().handle_async(req, context)
        return response
    finally:
        durable_client.reset(token)
