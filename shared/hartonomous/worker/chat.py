"""``POST /v1/chat/completions``: llama-cpp-python's chat on the engine's loaded model.

Only for models whose GGUF carries a chat template: without one llama-cpp-python would
guess a format (llama-2's) and the model would see a prompt it was never trained on.
"""

from __future__ import annotations

import time
from collections.abc import Generator, Iterator
from contextlib import contextmanager
from threading import Lock
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from jinja2 import TemplateError

from hartonomous.api.streams import Primed
from hartonomous.errors import UnprocessableContent
from hartonomous.inference.llama_engine import _grammar
from hartonomous.worker.context import Worker, ran
from hartonomous.worker.schemas import ChatBody
from hartonomous.worker.streaming import sse

CHAT_TEMPLATE = "tokenizer.chat_template"
# Handled here rather than passed on to llama-cpp-python.
_OWN = {
    "model", "n", "user", "min_tokens", "logit_bias_type", "grammar", "response_format",
    "stream", "stream_options", "logprobs", "top_logprobs", "max_tokens",
}  # fmt: skip


class _Usage:
    """Counts what the engine counts (every sampled token, an end-of-text one included) by a
    logits processor, one call per sampled token: ``create_chat_completion`` takes no
    stopping criteria, the engine's cheaper counter. The prompt's tokens are the context's
    length at the first call (the chat template's markup included)."""

    def __init__(self, llm: Any) -> None:
        self._llm = llm
        self.prompt_tokens = 0
        self.completion_tokens = 0
        self.started = self.first_at = self.ended = 0.0

    def __call__(self, _input_ids: Any, scores: Any) -> Any:
        if self.completion_tokens == 0:
            self.first_at = time.perf_counter()
            self.prompt_tokens = int(self._llm.n_tokens)
        self.completion_tokens += 1
        return scores

    def usage(self) -> dict[str, Any]:
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.prompt_tokens + self.completion_tokens,
        }

    def timings(self) -> dict[str, float]:
        prompt = (self.first_at or self.ended) - self.started
        return {"prompt_ms": round(prompt * 1000, 3),
                "generation_ms": round((self.ended - self.started) * 1000, 3)}  # fmt: skip


@contextmanager
def _input_errors() -> Iterator[None]:
    """llama-cpp-python says what is wrong with a request by ValueError (the prompt does
    not fit, an unknown tool) and jinja2 by TemplateError: both are the caller's to fix."""
    try:
        yield
    except ValueError as exc:
        raise UnprocessableContent(str(exc)) from exc
    except TemplateError as exc:
        raise UnprocessableContent(
            f"the model's chat template refused the messages: {exc}"
        ) from exc


def _grammar_of(body: ChatBody) -> Any:
    from llama_cpp.llama_grammar import JSON_GBNF, LlamaGrammar

    if body.response_format is not None and body.response_format.type != "text":
        schema = body.response_format.schema_or_none()
        return _grammar(schema) if schema is not None else LlamaGrammar.from_string(JSON_GBNF)
    if body.grammar is not None:
        with _input_errors():
            return LlamaGrammar.from_string(body.grammar, verbose=False)
    return None


def _arguments(body: ChatBody, llm: Any, max_tokens: int, counter: _Usage) -> dict[str, Any]:
    from llama_cpp import LogitsProcessorList, MinTokensLogitsProcessor

    if body.n not in (None, 1):
        raise UnprocessableContent("n must be 1: one choice per request")
    if body.logprobs:
        raise UnprocessableContent("logprobs are not supported")
    if body.logit_bias_type == "tokens":
        raise UnprocessableContent("logit_bias keys must be token ids")
    if not body.messages:
        raise UnprocessableContent("messages holds no message")
    processors = LogitsProcessorList([counter])
    if body.min_tokens > 0:
        processors.append(MinTokensLogitsProcessor(body.min_tokens, llm.token_eos()))
    kwargs = body.model_dump(exclude=_OWN)
    return kwargs | {
        "max_tokens": max_tokens, "grammar": _grammar_of(body), "logits_processor": processors,
    }  # fmt: skip


def _stream(
    llm: Any, lock: Lock, kwargs: dict[str, Any], counter: _Usage, include_usage: bool
) -> Generator[dict[str, Any], None, None]:
    last: dict[str, Any] | None = None
    with lock, _input_errors():
        counter.started = time.perf_counter()
        for chunk in llm.create_chat_completion(**kwargs, stream=True):
            last = chunk
            yield chunk
        counter.ended = time.perf_counter()
    if include_usage and last is not None:
        head = {k: last[k] for k in ("id", "object", "created", "model")}
        yield {**head, "choices": [], "usage": counter.usage(), "timings": counter.timings()}


def chat_router(worker: Worker) -> APIRouter:
    router = APIRouter()

    @router.post("/chat/completions", summary="Chat completion (OpenAI-compatible)")
    def create_chat_completion(body: ChatBody, request: Request) -> Response:
        model = worker.model(body.model, request)
        max_tokens = worker.check_max_tokens(body.max_tokens)
        llm, lock = worker.engine.loaded(model)
        if CHAT_TEMPLATE not in llm.metadata:
            raise UnprocessableContent(
                f"model {model.id!r} has no chat template: send a prompt to /v1/completions",
                model=model.id,
            )
        counter = _Usage(llm)
        kwargs = _arguments(body, llm, max_tokens, counter) | {"model": model.id}
        if body.stream:
            include_usage = bool(body.stream_options and body.stream_options.include_usage)
            events = Primed(_stream(llm, lock, kwargs, counter, include_usage))
            return sse(events, ran(model), events)
        with lock, _input_errors():
            counter.started = time.perf_counter()
            result = llm.create_chat_completion(**kwargs)
            counter.ended = time.perf_counter()
        result["usage"], result["timings"] = counter.usage(), counter.timings()
        return JSONResponse(result, headers=ran(model))

    return router
