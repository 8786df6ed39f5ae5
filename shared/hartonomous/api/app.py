"""The FastAPI application factory."""

from __future__ import annotations

from fastapi import FastAPI

from hartonomous import __version__
from hartonomous.api import atoms, problems, system
from hartonomous.bootstrap import Platform

DESCRIPTION = """
Everything a tenant brings becomes **atoms**: content-addressed by SHA-256, deduplicated per
tenant, streamed in and out. Authenticate with `Authorization: Bearer hk_...`.
Errors are RFC 9457 `application/problem+json`.
"""


def create_app(platform: Platform) -> FastAPI:
    app = FastAPI(title="Hartonomous", version=__version__, description=DESCRIPTION)
    app.state.platform = platform
    problems.install(app)
    app.include_router(system.router)
    app.include_router(atoms.router)
    return app
