"""The GPU worker: llama.cpp and the embedder behind OpenAI's HTTP API.

The platform calls it through the official ``openai`` client (``inference/openai_http.py``);
errors are the platform's RFC 9457 problems. Everything lives on the app built here: no
module state, so tests and servers can build as many as they like.
"""

from __future__ import annotations

import hmac
import logging
from typing import Any

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from hartonomous import __version__
from hartonomous.api import problems
from hartonomous.api.problems import PROBLEM_BASE
from hartonomous.bootstrap import Platform
from hartonomous.errors import Unauthenticated
from hartonomous.inference.llama_engine import LlamaEngine
from hartonomous.inference.model_files import builtin_model
from hartonomous.inference.openai_http import TENANT_HEADER
from hartonomous.inference.types import BUILTIN_MODEL, ModelUnavailable
from hartonomous.knowledge.embeddings import Embedder, MiniLMEmbedder
from hartonomous.models.service import READY
from hartonomous.settings import Settings
from hartonomous.worker.chat import chat_router
from hartonomous.worker.completions import completions_router
from hartonomous.worker.context import Worker
from hartonomous.worker.embeddings import embeddings_router
from hartonomous.worker.resolve import ModelResolver, engine_for

log = logging.getLogger(__name__)
DESCRIPTION = """
OpenAI-compatible inference for Hartonomous: `/v1/completions`, `/v1/chat/completions`,
`/v1/embeddings`. `model` is `gemma-3-270m` or a tenant's model id (tenant in
`X-Hartonomous-Tenant`); `X-Hartonomous-Model-Sha256` pins the weights. Errors are RFC 9457
`application/problem+json`.
"""


MISSING_KEY = (
    "the GPU worker needs its key: set HARTONOMOUS_WORKER_KEY (the same value on the platform),"
    " or start it with --insecure for local use only (it then takes calls without a key)"
)


class MissingWorkerKey(RuntimeError):
    """The worker was asked to start without HARTONOMOUS_WORKER_KEY and without --insecure."""


class _FinalClientErrors:
    """Tells OpenAI's clients not to retry a 4xx (they retry 409s by default): a model
    that is not ready or not the pinned file will not be on the next try either."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def sending(message: Message) -> None:
            if message["type"] == "http.response.start" and 400 <= message["status"] < 500:
                headers = [*message.get("headers", []), (b"x-should-retry", b"false")]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, sending if scope["type"] == "http" else send)


async def _model_unavailable(request: Request, exc: Exception) -> JSONResponse:
    return problems.problem_response(
        request,
        status=503,
        title="Model unavailable",
        detail=str(exc),
        type_uri=PROBLEM_BASE + "model-unavailable",
        headers={"x-should-retry": "false"},
    )


def _bearer_guard(settings: Settings) -> Any:
    bearer = HTTPBearer(auto_error=False, description="The worker key (HARTONOMOUS_WORKER_KEY).")
    key = settings.worker_key.get_secret_value().encode() if settings.worker_key else None

    # A default, not Annotated: the annotation is a string, and ``bearer`` is local here.
    def guard(credentials: HTTPAuthorizationCredentials | None = Depends(bearer)) -> None:
        if key is None:
            return
        given = credentials.credentials.encode() if credentials else b""
        if not hmac.compare_digest(given, key):
            raise Unauthenticated("send the worker key as 'Authorization: Bearer <key>'")

    return guard


def _models_router(worker: Worker, platform: Platform | None) -> APIRouter:
    router = APIRouter()

    @router.get("/models", summary="Models (OpenAI-compatible)")
    def list_models(request: Request) -> dict[str, Any]:
        def entry(model_id: str, owner: str) -> dict[str, Any]:
            return {"id": model_id, "object": "model", "created": 0, "owned_by": owner}

        data = [
            entry(BUILTIN_MODEL, "hartonomous"),
            entry(worker.embedder.model_name, "hartonomous"),
        ]
        tenant_id = request.headers.get(TENANT_HEADER)
        if tenant_id and platform is not None:
            page = platform.models.page(tenant_id, worker.settings.page_size_max, None)
            data += [entry(m.id, tenant_id) for m in page.items if m.status == READY]
        return {"object": "list", "data": data}

    return router


def create_worker_app(
    settings: Settings,
    *,
    engine: LlamaEngine | None = None,
    embedder: Embedder | None = None,
    platform: Platform | None = None,
    insecure: bool = False,
) -> FastAPI:
    """The worker app. ``platform`` gives it the model registry (tenants' models); without
    one it serves the built-in model and the embedder only. Without a worker key it refuses
    to start (``MissingWorkerKey``) unless ``insecure``: anyone who reaches it could run
    every tenant's models."""
    if settings.worker_key is None and not insecure:
        raise MissingWorkerKey(MISSING_KEY)
    worker = Worker(
        settings=settings,
        engine=engine or engine_for(settings, platform),
        embedder=embedder
        or MiniLMEmbedder(
            batch_size=settings.embedding_batch_size, precision=settings.embedding_precision
        ),
        resolver=ModelResolver(platform),
    )
    if settings.worker_key is None:
        log.warning("--insecure: the worker takes calls without a key (local use only)")
    app = FastAPI(title="Hartonomous GPU worker", version=__version__, description=DESCRIPTION)
    problems.install(app)
    app.add_exception_handler(ModelUnavailable, _model_unavailable)
    app.add_middleware(_FinalClientErrors)

    @app.get("/healthz", summary="Liveness, and which model files are loaded")
    def healthz() -> dict[str, Any]:
        # Tenants' models by file only: this route is open, their ids are not for everyone.
        try:
            builtin: str | None = builtin_model().sha256
        except ModelUnavailable:
            builtin = None
        loaded = [
            BUILTIN_MODEL if sha == builtin else f"sha256:{sha}"
            for sha in worker.engine.loaded_sha256s()
        ]
        return {"status": "ok", "models_loaded": loaded}

    v1 = APIRouter(prefix="/v1", dependencies=[Depends(_bearer_guard(settings))])
    v1.include_router(_models_router(worker, platform))
    v1.include_router(completions_router(worker))
    v1.include_router(chat_router(worker))
    v1.include_router(embeddings_router(worker))
    app.include_router(v1)
    return app


def worker_app_from_env() -> FastAPI:
    """For ``uvicorn --factory`` (the image): settings from the environment, the platform's
    registry. No insecure mode here: a deployed worker always has its key."""
    from hartonomous.bootstrap import bootstrap

    settings = Settings()
    return create_worker_app(settings, platform=bootstrap(settings))
