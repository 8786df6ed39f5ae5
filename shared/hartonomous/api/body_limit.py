"""Every request body is bounded before it is read whole, chunked or not.

FastAPI reads a JSON body whole before it validates it, so without a bound a client can make
the server hold any number of bytes (50 MB to ``/v1/search`` was read before its 422; 300 MB
of chunked JSON to ``/v1/models`` raised memory by 914 MiB). This pure ASGI middleware counts
the bytes as they arrive and answers ``413`` once past the limit: at once when
``Content-Length`` already says so, otherwise on the chunk that crosses it. A JSON body within
the limit is also refused (400) when it holds what Python's parser takes but nothing after it
can (a lone surrogate, ``NaN``), so no route has to remember to.

Streaming upload routes (those whose OpenAPI request body is bytes, ``format: binary``, or
multipart) stream to storage under their own limits and pass untouched, except for a media
type they declare with a structure (``POST /v1/models`` ``{"atom_id": ...}`` as JSON), which
is read whole and bounded like any other.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from hartonomous.api.openapi_paths import is_json, operations
from hartonomous.api.problems import send_problem
from hartonomous.errors import InvalidInput, PayloadTooLarge


@dataclass(frozen=True)
class StreamingRoute:
    path: re.Pattern[str]
    method: str
    structured: frozenset[str]  # media types it reads whole (bounded): JSON beside the bytes


def streaming_routes(schema: dict[str, Any]) -> list[StreamingRoute]:
    """The operations that stream their body (a binary or multipart request body)."""
    return [
        StreamingRoute(op.path, op.method, op.structured)
        for op in operations(schema)
        if op.streamed
    ]


class BodyLimit:
    """Reads a bounded body whole (it is read whole anyway) and refuses it with 413 once past
    ``limit``, or with 400 when it is JSON that no later step can take (see ``check_json``);
    the application then gets it in one piece."""

    def __init__(self, app: ASGIApp, *, limit: int, openapi: Callable[[], dict[str, Any]]) -> None:
        self.app = app
        self.limit = limit
        self._openapi = openapi
        self._streaming: list[StreamingRoute] | None = None

    def limit_for(self, scope: Scope) -> int | None:
        if self._streaming is None:  # every route is added by the first request
            self._streaming = streaming_routes(self._openapi())
        path, method = scope["path"], scope["method"]
        for route in self._streaming:
            if method == route.method and route.path.match(path):
                essence = _header(scope, b"content-type").split(";", 1)[0].strip().lower()
                return self.limit if essence in route.structured else None
        return self.limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limit_for(scope)
        if limit is None:
            await self.app(scope, receive, send)
            return
        declared = _header(scope, b"content-length")
        if declared.isdigit() and int(declared) > limit:
            await self._refuse(scope, send, limit)
            return
        body = bytearray()
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                return
            body += message.get("body", b"")
            if len(body) > limit:
                await self._refuse(scope, send, limit)
                return
            if not message.get("more_body", False):
                break
        if is_json(_header(scope, b"content-type")):
            try:
                check_json(bytes(body))
            except InvalidInput as exc:
                await send_problem(send, exc, scope.get("path"))
                return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()  # what follows the body: a disconnect
            replayed = True
            return {"type": "http.request", "body": bytes(body), "more_body": False}

        await self.app(scope, replay, send)

    @staticmethod
    async def _refuse(scope: Scope, send: Send, limit: int) -> None:
        error = PayloadTooLarge(
            f"the request body exceeds the limit of {limit} bytes", limit_bytes=limit
        )
        # The rest of the body is never read: the connection cannot be reused.
        await send_problem(send, error, scope.get("path"), headers={"Connection": "close"})


# \uD800-\uDFFF escapes: only a body that has one needs the full check for lone surrogates.
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")
_CONSTANTS = re.compile(rb"NaN|Infinity")


def _no_constant(name: str) -> object:
    raise InvalidInput(f"the JSON body holds {name}, which is not JSON: send a number or null")


def check_json(body: bytes) -> None:
    """Refuse JSON that parses in Python but breaks a later step: a lone surrogate escape
    (UTF-8 cannot encode it: SQLite, the tokenizers and the JSON columns fail on it) and
    ``NaN``/``Infinity`` (not JSON: the response encoder refuses them). Malformed JSON is
    left to the route's own validation (422). The common body pays two regex scans."""
    if not (_SURROGATE_ESCAPE.search(body) or _CONSTANTS.search(body)):
        return
    try:
        value = json.loads(body, parse_constant=_no_constant)
    except (ValueError, RecursionError):
        return  # not JSON at all: the route says so
    try:
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidInput(
            "the JSON body holds a lone surrogate escape (e.g. \\ud800): text must be valid Unicode"
        ) from exc
    except RecursionError:
        return


def _header(scope: Scope, name: bytes) -> str:
    for key, value in scope.get("headers", ()):
        if key.lower() == name:
            return bytes(value).decode("latin-1")
    return ""
