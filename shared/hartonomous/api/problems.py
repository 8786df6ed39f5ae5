"""RFC 9457 problem details: the one place where every error becomes problem+json."""

from __future__ import annotations

import json
import logging
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import Send

from hartonomous.api.openapi_paths import allowed_methods
from hartonomous.errors import HartonomousError

log = logging.getLogger(__name__)
PROBLEM_JSON = "application/problem+json"
PROBLEM_BASE = "https://hartonomous.dev/problems/"


class Problem(BaseModel):
    """The error body of every endpoint (RFC 9457)."""

    model_config = ConfigDict(extra="allow")

    type: str = "about:blank"
    title: str
    status: int
    detail: str | None = None
    instance: str | None = None


def documented(status: int, description: str) -> dict[int | str, dict[str, Any]]:
    """An OpenAPI ``responses`` entry: ``status`` answers problem+json, for ``description``."""
    return {status: {"model": Problem, "content": {PROBLEM_JSON: {}}, "description": description}}


UNAVAILABLE = documented(503, "Workflows are not available in this process")


def problem_response(
    request: Request,
    *,
    status: int,
    title: str,
    detail: str | None,
    type_uri: str = "about:blank",
    headers: dict[str, str] | None = None,
    **extensions: Any,
) -> JSONResponse:
    body: dict[str, Any] = {
        "type": type_uri,
        "title": title,
        "status": status,
        "detail": detail,
        "instance": request.url.path,
        **extensions,
    }
    return JSONResponse(body, status_code=status, media_type=PROBLEM_JSON, headers=headers)


def problem_body(error: HartonomousError, instance: str | None) -> bytes:
    """The problem+json bytes of ``error``, for code below the application (middleware, the
    HTTP protocol) that answers without a ``Request``."""
    body = {
        "type": error.type_uri,
        "title": error.title,
        "status": error.status,
        "detail": error.detail,
        "instance": instance,
        **error.extensions,
    }
    return json.dumps(body, separators=(",", ":")).encode()


async def send_problem(
    send: Send,
    error: HartonomousError,
    instance: str | None,
    headers: dict[str, str] | None = None,
) -> None:
    """Answer ``error`` as problem+json straight through ASGI ``send``."""
    body = problem_body(error, instance)
    raw_headers = [
        (b"content-type", PROBLEM_JSON.encode()),
        (b"content-length", str(len(body)).encode()),
        *(
            (k.lower().encode(), v.encode())
            for k, v in {**error.headers, **(headers or {})}.items()
        ),
    ]
    await send({"type": "http.response.start", "status": error.status, "headers": raw_headers})
    await send({"type": "http.response.body", "body": body})


def _slug(status: int) -> str:
    return HTTPStatus(status).phrase.lower().replace(" ", "-").replace("'", "")


async def _domain_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HartonomousError)
    return problem_response(
        request,
        status=exc.status,
        title=exc.title,
        detail=exc.detail,
        type_uri=exc.type_uri,
        headers=exc.headers or None,
        **exc.extensions,
    )


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    phrase = HTTPStatus(exc.status_code).phrase
    detail = exc.detail if isinstance(exc.detail, str) and exc.detail != phrase else None
    if exc.status_code == 404 and detail is None:
        detail = f"no route {request.method} {request.url.path}"
    headers = dict(exc.headers) if exc.headers else {}
    if exc.status_code == 405 and (allowed := _allowed_methods(request)):
        # Starlette names the methods of the first route that matched the path only.
        headers["Allow"] = ", ".join(allowed)
        detail = detail or f"{request.method} is not allowed here; use {headers['Allow']}"
    return problem_response(
        request,
        status=exc.status_code,
        title=phrase,
        detail=detail,
        type_uri=PROBLEM_BASE + _slug(exc.status_code),
        headers=headers or None,
    )


def _allowed_methods(request: Request) -> list[str]:
    """Every method the OpenAPI declares at this path."""
    return allowed_methods(request.app.openapi(), request.url.path)


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = [
        {"location": list(e.get("loc", ())), "message": e.get("msg", ""), "type": e.get("type")}
        for e in exc.errors()
    ]
    where = "; ".join(f"{'.'.join(str(p) for p in e['location'])}: {e['message']}" for e in errors)
    return problem_response(
        request,
        status=422,
        title="Request validation failed",
        detail=where,
        type_uri=PROBLEM_BASE + "validation-error",
        errors=errors,
    )


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    return problem_response(
        request,
        status=500,
        title="Internal server error",
        detail="an unexpected error occurred; it has been logged",
        type_uri=PROBLEM_BASE + "internal",
    )


def install(app: FastAPI) -> None:
    app.add_exception_handler(HartonomousError, _domain_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(Exception, _unexpected)


PROBLEM_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {
        "model": Problem,
        "content": {PROBLEM_JSON: {}},
        "description": HTTPStatus(status).phrase,
    }
    for status in (400, 401, 403, 404, 422)
}
