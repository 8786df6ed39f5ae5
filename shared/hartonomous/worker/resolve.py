"""Which weights a request's OpenAI ``model`` field names, and how their file is had.

The built-in model needs no tenant; any other id is a tenant's model, looked up in the
registry (the tenant in a header, since OpenAI has no field for it). The caller may pin the
file's SHA-256: the receipt the platform writes must name the weights that really ran.
"""

from __future__ import annotations

from dataclasses import dataclass

from hartonomous.bootstrap import Platform
from hartonomous.errors import Conflict, InvalidInput, NotFound
from hartonomous.inference.llama_engine import EngineOptions, LlamaEngine
from hartonomous.inference.model_files import ModelFiles, builtin_model
from hartonomous.inference.openai_http import SHA256_HEADER, TENANT_HEADER
from hartonomous.inference.types import BUILTIN_MODEL, ModelRef
from hartonomous.models.service import READY
from hartonomous.settings import Settings


def engine_for(settings: Settings, platform: Platform | None) -> LlamaEngine:
    """The engine as settings describe it (the worker's: every layer on the GPU). The
    platform's ``ModelFiles`` reads tenants' models from the blob store, by their parts."""
    files = platform.inference.files if platform else ModelFiles(settings.resolved_model_cache_dir)
    options = EngineOptions(
        n_ctx=settings.inference_context_tokens,
        n_threads=settings.inference_threads,
        n_gpu_layers=settings.inference_gpu_layers,
    )
    return LlamaEngine(files, options)


@dataclass(frozen=True)
class ModelResolver:
    platform: Platform | None

    def resolve(self, model_id: str | None, tenant_id: str | None, sha256: str | None) -> ModelRef:
        model = self._lookup(model_id or BUILTIN_MODEL, tenant_id or None)
        if sha256 is not None and sha256.strip().lower() != model.sha256:
            raise Conflict(
                f"model {model.id!r} is the file {model.sha256}, not the {sha256.strip()} "
                f"named in {SHA256_HEADER}",
                sha256=model.sha256,
            )
        return model

    def _lookup(self, model_id: str, tenant_id: str | None) -> ModelRef:
        if model_id == BUILTIN_MODEL:
            return builtin_model()
        if tenant_id is None:
            raise InvalidInput(
                f"model {model_id!r} is not {BUILTIN_MODEL!r}: name its tenant in the "
                f"{TENANT_HEADER} header"
            )
        if self.platform is None:
            raise NotFound(f"no model {model_id!r}: this worker has no model registry")
        record = self.platform.models.get(tenant_id, model_id)
        if record.status != READY:
            raise Conflict(f"model {model_id!r} is {record.status}, not ready")
        return ModelRef(record.id, record.sha256, record.name, tenant_id)
