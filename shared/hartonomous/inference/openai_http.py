"""The GPU worker as the platform's inference and embedding ports, through the official
``openai`` client: its retries, timeouts and SSE parsing rather than our own.

The worker answers with the platform's RFC 9457 problems; they come back here as the same
domain errors the in-process adapters raise, so callers cannot tell where the model ran.
"""

from __future__ import annotations

import base64
import threading
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, cast

import httpx
import numpy as np
import openai

from hartonomous.errors import (
    Conflict,
    HartonomousError,
    InvalidInput,
    NotFound,
    PayloadTooLarge,
    ServiceUnavailable,
    UnprocessableContent,
)
from hartonomous.inference.types import (
    Completion,
    CompletionRequest,
    ModelRef,
    ModelUnavailable,
    finish,
)
from hartonomous.knowledge.chunking import Tokenizer
from hartonomous.knowledge.embeddings import MINILM, Vectors, minilm_tokenizer

# The worker's extensions: whose model, and exactly which weights.
TENANT_HEADER = "X-Hartonomous-Tenant"
SHA256_HEADER = "X-Hartonomous-Model-Sha256"
# On a streamed completion's first chunk: the prompt's tokens, known before the last chunk.
PROMPT_TOKENS_FIELD = "hartonomous_prompt_tokens"
BATCH = 256  # texts per embeddings call
_BY_STATUS: dict[int, type[HartonomousError]] = {
    400: InvalidInput,
    404: NotFound,
    409: Conflict,
    413: PayloadTooLarge,
    422: UnprocessableContent,
}
_PROBLEM_MEMBERS = {"type", "title", "status", "detail", "instance", "headers"}


def _client(url: str, key: str | None, timeout: float, max_retries: int) -> openai.OpenAI:
    return openai.OpenAI(
        base_url=f"{url}/v1",
        api_key=key or "none",
        # A read may wait for a model to be downloaded and loaded before its first token.
        timeout=httpx.Timeout(timeout, connect=10.0),
        max_retries=max_retries,
    )


def _from_problem(
    url: str, status: int | None, problem: Mapping[str, Any], message: str
) -> Exception:
    detail = str(problem.get("detail") or problem.get("message") or message)
    if str(problem.get("type", "")).endswith("/model-unavailable"):
        return ModelUnavailable(detail)
    if status in (401, 403):
        return ServiceUnavailable(
            f"the GPU worker at {url} refused the platform's key ({detail}): "
            "check HARTONOMOUS_WORKER_KEY on both sides"
        )
    error = _BY_STATUS.get(status or 0)
    if error is not None:
        extensions = {
            k: v for k, v in problem.items() if k not in _PROBLEM_MEMBERS and k.isidentifier()
        }
        return error(detail, **extensions)
    return ServiceUnavailable(
        f"the GPU worker at {url} failed ({status or 'in a stream'}): {detail}"
    )


def domain_error(url: str, exc: openai.OpenAIError) -> Exception:
    """The domain error an ``openai`` error from the worker at ``url`` stands for."""
    if isinstance(exc, openai.APIConnectionError):  # timeouts too
        return ServiceUnavailable(f"the GPU worker at {url} cannot be reached: {exc.message}")
    if isinstance(exc, openai.APIStatusError):
        body = exc.body if isinstance(exc.body, Mapping) else {}
        return _from_problem(url, exc.status_code, body, exc.message)
    if isinstance(exc, openai.APIError):  # an error event in a stream: {"message", "code"}
        body = exc.body if isinstance(exc.body, Mapping) else {}
        code = body.get("code")
        return _from_problem(url, code if isinstance(code, int) else None, body, exc.message)
    return ServiceUnavailable(f"the GPU worker at {url}: {exc}")


class WorkerInference:
    """The ``Inference`` port on the GPU worker's ``/v1/completions`` (streamed: the text as
    it comes, then the worker engine's own token counts and timings)."""

    def __init__(
        self, url: str, key: str | None = None, *, timeout: float = 600.0, max_retries: int = 2
    ) -> None:
        self.url = url.rstrip("/")
        self._client = _client(self.url, key, timeout, max_retries)

    def complete(self, model: ModelRef, request: CompletionRequest) -> Completion:
        """One response, not a stream: no event per token to encode, send and parse (the
        streamed call measured 0.85 of in-process tokens per second on 2 shared cores).
        Streamed all the same when the request may be cancelled: closing the stream is what
        stops the worker's generation."""
        if request.control is not None:
            return finish(self.stream(model, request))
        try:
            done = self._client.completions.create(**self._arguments(model, request))
        except openai.OpenAIError as exc:
            raise domain_error(self.url, exc) from exc
        if done.usage is None or not done.choices:
            raise ServiceUnavailable(f"the GPU worker at {self.url} sent no usage")
        timings = (done.model_extra or {}).get("timings") or {}
        return Completion(
            text=done.choices[0].text,
            finish_reason=done.choices[0].finish_reason or "length",
            prompt_tokens=done.usage.prompt_tokens,
            completion_tokens=done.usage.completion_tokens,
            prompt_ms=float(timings.get("prompt_ms", 0.0)),
            generation_ms=float(timings.get("generation_ms", 0.0)),
        )

    @staticmethod
    def _arguments(model: ModelRef, request: CompletionRequest) -> dict[str, Any]:
        """The request, as the worker's OpenAI API takes it, pinned to the model's file."""
        headers = {SHA256_HEADER: model.sha256}
        if model.tenant_id is not None:
            headers[TENANT_HEADER] = model.tenant_id
        return {
            "model": model.id,
            "prompt": request.prompt,
            "max_tokens": request.max_tokens,
            "temperature": request.temperature,
            "stop": list(request.stop) or None,
            "seed": request.seed,
            "extra_body": (
                {"json_schema": request.json_schema} if request.json_schema is not None else None
            ),
            "extra_headers": headers,
        }

    def stream(self, model: ModelRef, request: CompletionRequest) -> Iterator[str | Completion]:
        """Cancelled (``request.control``): the stream is closed at the next chunk, which the
        worker sees as its client gone and stops its generation at the next token."""
        text: list[str] = []
        finish_reason = "length"
        last: Any = None
        control = request.control
        chunks_seen = 0
        prompt_tokens: int | None = None
        try:
            chunks = self._client.completions.create(
                **self._arguments(model, request),
                stream=True,
                stream_options={"include_usage": True},
            )
            with chunks:
                for chunk in chunks:
                    told = (chunk.model_extra or {}).get(PROMPT_TOKENS_FIELD)
                    if isinstance(told, int) and prompt_tokens is None:
                        prompt_tokens = told
                        if control is not None:
                            control.evaluated(told)
                    if control is not None and control.cancelled:
                        break
                    for choice in chunk.choices:
                        if choice.text:
                            text.append(choice.text)
                            if control is not None:  # about a token; exact at the end
                                control.ran(1)
                                chunks_seen += 1
                            yield choice.text
                        if choice.finish_reason:
                            finish_reason = choice.finish_reason
                    if chunk.usage is not None:
                        last = chunk
        except openai.OpenAIError as exc:
            raise domain_error(self.url, exc) from exc
        if control is not None and control.cancelled and last is None:
            # The worker's last count never came: its first chunk's prompt count and the
            # chunks it sent stand for its tokens (nothing received: nothing billed).
            yield Completion("".join(text), "cancelled", prompt_tokens or 0, chunks_seen)
            return
        if last is None:
            raise ServiceUnavailable(f"the GPU worker at {self.url} sent no usage")
        timings = (last.model_extra or {}).get("timings") or {}
        yield Completion(
            text="".join(text),
            finish_reason=finish_reason,
            prompt_tokens=last.usage.prompt_tokens,
            completion_tokens=last.usage.completion_tokens,
            prompt_ms=float(timings.get("prompt_ms", 0.0)),
            generation_ms=float(timings.get("generation_ms", 0.0)),
        )


class WorkerEmbedder:
    """The ``Embedder`` port on the GPU worker's ``/v1/embeddings``. ``model_name`` is the
    in-process embedder's: stored vectors are keyed by it, and they are the same vectors."""

    def __init__(
        self,
        url: str,
        key: str | None = None,
        model_name: str = MINILM,
        dimension: int = 384,
        tokenizer: Tokenizer | None = None,
        *,
        timeout: float = 120.0,
        max_retries: int = 2,
    ) -> None:
        self.url = url.rstrip("/")
        self.model_name = model_name
        self.dimension = dimension
        self._tokenizer = tokenizer
        self._tokenizer_lock = threading.Lock()
        self._client = _client(self.url, key, timeout, max_retries)

    @property
    def tokenizer(self) -> Tokenizer:
        """The model's tokenizer, for chunking (loaded on first use, no torch needed)."""
        with self._tokenizer_lock:
            if self._tokenizer is None:
                self._tokenizer = minilm_tokenizer()
            return self._tokenizer

    def embed(self, texts: Sequence[str], *, spare_core: bool = False) -> Vectors:
        out = np.empty((len(texts), self.dimension), dtype=np.float32)
        for start in range(0, len(texts), BATCH):
            batch = list(texts[start : start + BATCH])
            try:
                response = self._client.embeddings.create(
                    model=self.model_name, input=batch, encoding_format="base64"
                )
            except openai.OpenAIError as exc:
                raise domain_error(self.url, exc) from exc
            for item in response.data:
                vector = np.frombuffer(base64.b64decode(cast(str, item.embedding)), dtype="<f4")
                if vector.shape != (self.dimension,):
                    raise ServiceUnavailable(
                        f"the GPU worker at {self.url} sent {vector.size} dimensions, "
                        f"not {self.dimension}"
                    )
                out[start + item.index] = vector
        out /= np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)
        return out
