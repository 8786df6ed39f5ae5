"""One request of Azure Functions HTTP streams relayed through an ASGI app, chunk by chunk.

With HTTP streams the Python worker serves the host's request on its own uvicorn and hands
the function a ``fastapi.Request``; what the function returns is then sent by that server.
``relay`` runs the app in a task of its own on the request's scope and ``receive`` (the body
is pulled from the connection as the app reads it, never gathered), and answers as soon as
the app starts its response: a ``StreamingResponse`` fed by the app's ``send`` through a
bounded queue, so a slow client slows the app down instead of filling memory.

The app's task copies the caller's context when it starts, so context variables the caller
set (the Durable client) hold for the whole request, while the body streams too, after the
function itself has returned.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import AsyncIterator
from typing import Any

from fastapi import Request
from fastapi.responses import StreamingResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

logger = logging.getLogger(__name__)

# Response messages held between the app and the client: each is one chunk of the app's
# own size (1 MiB for atom downloads), so at most a few MiB per request.
QUEUE_MESSAGES = 4

# What the app needs of the worker's scope. Left out: what the worker's router added
# (its app, route, endpoint, path params), its root path, and extensions such as
# ``http.response.pathsend`` that only the worker's server could honour.
_SCOPE_KEYS = (
    "type",
    "asgi",
    "http_version",
    "method",
    "scheme",
    "server",
    "client",
    "path",
    "raw_path",
    "query_string",
    "headers",
)


def app_scope(request: Request) -> Scope:
    """The request's ASGI scope as the app would get it from its own server."""
    scope = {key: request.scope[key] for key in _SCOPE_KEYS if key in request.scope}
    scope.update(root_path="", state={}, extensions={})
    return scope


class RelayedResponse(StreamingResponse):
    """The app's response: its status and headers as sent, its body as the app sends it."""

    def __init__(
        self, start: Message, messages: asyncio.Queue[Message | None], task: asyncio.Task[None]
    ) -> None:
        super().__init__(_body(messages), status_code=int(start["status"]))
        self.raw_headers = [(bytes(k), bytes(v)) for k, v in start.get("headers", [])]
        self._task = task
        # A response dropped unsent (its request went away first) stops the app too.
        weakref.finalize(self, task.cancel)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # The app listens for the client's disconnect on the request's receive: reading it
        # here too would take body chunks away from the app.
        try:
            await self.stream_response(send)
        finally:
            if not self._task.done():
                self._task.cancel()


async def _body(messages: asyncio.Queue[Message | None]) -> AsyncIterator[bytes]:
    while (message := await messages.get()) is not None:
        if message["type"] != "http.response.body":
            continue
        yield bytes(message.get("body", b""))
        if not message.get("more_body", False):
            return
    # The app ended mid-body: fail the response, so the client sees a broken transfer
    # rather than a short body that looks complete.
    raise RuntimeError("the app stopped before the end of its response")


async def relay(app: ASGIApp, request: Request) -> StreamingResponse:
    """Run ``app`` on ``request``; return its response once the app has started it. An app
    that fails before it starts a response raises here (the invocation fails)."""
    messages: asyncio.Queue[Message | None] = asyncio.Queue(QUEUE_MESSAGES)

    async def send(message: Message) -> None:
        await messages.put(message)

    async def run() -> None:
        try:
            await app(app_scope(request), request.receive, send)
        except asyncio.CancelledError:
            raise  # cancelled by the response's reader: nobody reads the queue any more
        except BaseException:
            await messages.put(None)
            raise
        await messages.put(None)

    task = asyncio.create_task(run())
    task.add_done_callback(_log_failure)
    try:
        start = await messages.get()
    except BaseException:
        task.cancel()
        raise
    if start is None:
        await task  # raises what stopped the app
        raise RuntimeError("the app returned without a response")
    if start["type"] != "http.response.start":
        task.cancel()
        raise RuntimeError(f"the app sent {start['type']} before http.response.start")
    return RelayedResponse(start, messages, task)


def _log_failure(task: asyncio.Task[Any]) -> None:
    if not task.cancelled() and (error := task.exception()) is not None:
        logger.error("the HTTP app failed", exc_info=error)
