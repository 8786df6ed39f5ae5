"""What the routes share: settings, the engine, the embedder and the model resolver."""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import Request

from hartonomous.errors import UnprocessableContent
from hartonomous.inference.llama_engine import LlamaEngine
from hartonomous.inference.openai_http import SHA256_HEADER, TENANT_HEADER
from hartonomous.inference.types import ModelRef
from hartonomous.ports import Embedder
from hartonomous.settings import Settings
from hartonomous.worker.resolve import ModelResolver


@dataclass(frozen=True)
class Worker:
    settings: Settings
    engine: LlamaEngine
    embedder: Embedder
    resolver: ModelResolver

    def model(self, name: str | None, request: Request) -> ModelRef:
        return self.resolver.resolve(
            name, request.headers.get(TENANT_HEADER), request.headers.get(SHA256_HEADER)
        )

    def check_max_tokens(self, max_tokens: int | None) -> int:
        """The request's ``max_tokens`` (the platform's largest when unset), never above it."""
        limit = self.settings.generation_max_tokens
        if max_tokens is not None and max_tokens > limit:
            raise UnprocessableContent(
                f"max_tokens is {max_tokens}; at most {limit} here", limit=limit
            )
        return max_tokens or limit


def ran(model: ModelRef) -> dict[str, str]:
    """Response headers naming the weights that ran (for the caller's receipt)."""
    return {SHA256_HEADER: model.sha256}
