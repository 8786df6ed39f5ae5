"""The RateLimit fields on every admitted response, streaming ones too, and in the OpenAPI:
``api/auth.py`` puts what admission said into the request's scope, this pure ASGI middleware
writes it into the response's head (a 429 carries its own)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import FastAPI
from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from hartonomous.api.problems import PROBLEM_JSON

SCOPE_KEY = "hartonomous.ratelimit"


def admitted(scope: Scope, headers: dict[str, str]) -> None:
    """Called once a request is admitted: its response carries ``headers``."""
    scope.setdefault(SCOPE_KEY, {}).update(headers)


class RateLimitHeaders:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        said: dict[str, str] = {}
        scope[SCOPE_KEY] = said

        async def send_with(message: Message) -> None:
            if message["type"] == "http.response.start" and said:
                headers = MutableHeaders(scope=message)
                for name, value in said.items():
                    if name not in headers:
                        headers[name] = value
            await send(message)

        await self.app(scope, receive, send_with)


_FIELD = {"schema": {"type": "string"}}
_HEADERS = {
    "RateLimit-Policy": {**_FIELD, "description": 'The request quota: "requests";q=..;w=..'},
    "RateLimit": {**_FIELD, "description": 'What is left of it: "requests";r=..;t=..'},
}
TOO_MANY = {
    "description": "Over a limit of the tenant's plan (see Retry-After and RateLimit)",
    "content": {PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/Problem"}}},
    "headers": {"Retry-After": {**_FIELD, "description": "Seconds to wait"}, **_HEADERS},
}


def document(app: FastAPI) -> None:
    """Every operation that takes an API key may answer 429, and says its RateLimit fields."""
    build: Callable[[], dict[str, Any]] = app.openapi
    done: list[int] = []

    def openapi() -> dict[str, Any]:
        schema = build()
        if id(schema) not in done:  # the schema is built once and cached by the app
            for item in schema.get("paths", {}).values():
                for operation in item.values():
                    if isinstance(operation, dict) and operation.get("security"):
                        responses = operation.setdefault("responses", {})
                        responses.setdefault("429", TOO_MANY)
                        for status, response in responses.items():
                            if status.startswith("2"):
                                response.setdefault("headers", {}).update(_HEADERS)
            done.append(id(schema))
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
