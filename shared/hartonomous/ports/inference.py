"""Completion by a model (``inference/``)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from hartonomous.inference.types import Completion, CompletionRequest, ModelRef


class Inference(Protocol):
    """Completion by a model: in process (llama.cpp) or over HTTP (the GPU worker)."""

    def complete(self, model: ModelRef, request: CompletionRequest) -> Completion: ...

    def stream(self, model: ModelRef, request: CompletionRequest) -> Iterator[str | Completion]:
        """Text pieces as the model produces them, then one final ``Completion``."""
        ...
