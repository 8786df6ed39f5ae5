"""The one catch-all HTTP function: every route goes to the FastAPI app, streamed both ways.

It uses Azure Functions HTTP streams (``azurefunctions-extensions-http-fastapi``, app
setting ``PYTHON_ENABLE_INIT_INDEXING=1``): importing the extension is what makes the worker
hand this function a ``fastapi.Request`` and send back the ``StreamingResponse`` it returns,
so uploads, GGUF exports and ``/v1/generate`` SSE pass chunk by chunk, past the 100 MB limit
of buffered HTTP functions. ``functions.asgi_relay`` runs the app on the request.

It also takes the Durable client binding, so routes can start orchestrations; the client is
handed to the app through a context variable for the whole request, streaming included.
"""

from __future__ import annotations

from functools import cache

import azure.durable_functions as df
import azure.functions as func

# Imported for its effect: a loaded web extension is what turns HTTP streams on in the worker.
import azurefunctions.extensions.http.fastapi  # noqa: F401
from fastapi import FastAPI, Request
from fastapi.responses import StreamingResponse

from functions import runtime
from functions.asgi_relay import relay
from hartonomous.api.app import create_app
from hartonomous.api.durable import durable_client

bp = df.Blueprint()


@cache
def _app() -> FastAPI:
    """Built on the first request, not at import (indexing and cold starts stay fast). Its
    lifespan never runs here: the outbox relay and timers are functions of their own."""
    return create_app(runtime.platform())


@bp.route(
    route="{*route}",
    methods=["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"],
    auth_level=func.AuthLevel.ANONYMOUS,
)
@bp.durable_client_input(client_name="client")
async def http_api(req: Request, client: df.DurableOrchestrationClient) -> StreamingResponse:
    token = durable_client.set(client)
    try:
        # The app's task starts with a copy of this context: the client outlives the reset.
        return await relay(_app(), req)
    finally:
        durable_client.reset(token)
