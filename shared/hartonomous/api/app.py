"""The FastAPI application factory."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI

from hartonomous import __version__
from hartonomous.api import (
    agent_runs,
    agents,
    atoms,
    autonomy,
    billing,
    capabilities,
    concepts,
    generation,
    keys,
    knowledge,
    models,
    problems,
    rate_headers,
    system,
    upload_sessions,
    workflows,
)
from hartonomous.api.body_limit import BodyLimit
from hartonomous.api.refusal_gate import RefusalGate
from hartonomous.bootstrap import Platform

DESCRIPTION = """
Everything a tenant brings becomes **atoms**: content-addressed by SHA-256, deduplicated per
tenant, streamed in and out. Authenticate with `Authorization: Bearer hk_...`.
Errors are RFC 9457 `application/problem+json`.
"""


def create_app(platform: Platform) -> FastAPI:
    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        # Local world only: the workflow host and timer triggers live with the server.
        platform.start_background()
        try:
            yield
        finally:
            platform.stop_background()

    app = FastAPI(
        title="Hartonomous", version=__version__, description=DESCRIPTION, lifespan=lifespan
    )
    app.state.platform = platform
    problems.install(app)
    app.include_router(system.router)
    app.include_router(billing.router)
    app.include_router(keys.router)
    app.include_router(atoms.router)
    app.include_router(workflows.router)
    app.include_router(knowledge.router)
    app.include_router(concepts.router)
    app.include_router(models.router)
    app.include_router(generation.router)
    app.include_router(upload_sessions.router)
    app.include_router(autonomy.router)
    app.include_router(capabilities.router)
    app.include_router(agent_runs.router)
    # After agent_runs.router: /v1/agents/runs must not be read as an agent's name.
    app.include_router(agents.router)
    app.add_middleware(
        BodyLimit, limit=platform.settings.max_json_body_bytes, openapi=lambda: app.openapi()
    )
    app.add_middleware(rate_headers.RateLimitHeaders)
    app.add_middleware(RefusalGate)  # outermost of ours: its refusals skip the rest
    _openapi_tells_settings(app, platform)
    rate_headers.document(app)
    return app


def _openapi_tells_settings(app: FastAPI, platform: Platform) -> None:
    """Bounds that are settings, not constants, written into the schema the app serves, so
    it promises what the server accepts (``max_tokens``, an upload session's ``size``, a
    top-up's ``amount``)."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = build()
            schemas, settings = schema["components"]["schemas"], platform.settings
            schemas["GenerateIn"]["properties"]["max_tokens"]["maximum"] = (
                settings.generation_max_tokens
            )
            if "TopUpIn" in schemas:
                amount = schemas["TopUpIn"]["properties"]["amount"]
                amount["minimum"] = settings.billing_top_up_min_credits
                amount["maximum"] = settings.billing_top_up_max_credits
            if "UploadIn" in schemas:
                schemas["UploadIn"]["properties"]["size"]["maximum"] = (
                    settings.max_session_upload_bytes
                )
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
