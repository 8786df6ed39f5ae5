"""The FastAPI application factory."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from hartonomous import __version__
from hartonomous.api import atoms, generation, knowledge, models, problems, system, workflows
from hartonomous.api import upload_sessions
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
    app.include_router(atoms.router)
    app.include_router(workflows.router)
    app.include_router(knowledge.router)
    app.include_router(models.router)
    app.include_router(generation.router)
    app.include_router(upload_sessions.router)
    return app
