"""``POST /v1/completions``: the platform's engine behind OpenAI's text completion.

The same ``LlamaEngine.stream`` as in process, so a prompt gives the same text and the same
token counts here as there. Routes are sync: FastAPI runs them, and the stream's steps, in
its thread pool, never on the event loop.
"""

from __future__ import annotations

import dataclasses
import time
import uuid
from collections.abc import Generator, Iterator
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from hartonomous.api.streams import Primed
from hartonomous.errors import UnprocessableContent
from hartonomous.inference.openai_http import PROMPT_TOKENS_FIELD
from hartonomous.inference.types import Completion, CompletionRequest, Control
from hartonomous.worker.context import Worker, ran
from hartonomous.worker.schemas import CompletionBody, refuse_unsupported
from hartonomous.worker.streaming import sse


def usage(done: Completion) -> dict[str, Any]:
    return {
        "prompt_tokens": done.prompt_tokens,
        "completion_tokens": done.completion_tokens,
        "total_tokens": done.prompt_tokens + done.completion_tokens,
    }


def timings(done: Completion) -> dict[str, float]:
    """Extension (as llama.cpp's server has it): where the time went."""
    return {"prompt_ms": round(done.prompt_ms, 3), "generation_ms": round(done.generation_ms, 3)}


def _choice(text: str, finish_reason: str | None) -> dict[str, Any]:
    return {"text": text, "index": 0, "logprobs": None, "finish_reason": finish_reason}


def _request(body: CompletionBody, max_tokens: int) -> CompletionRequest:
    if isinstance(body.prompt, list):
        if len(body.prompt) != 1:
            raise UnprocessableContent("prompt must be one string (or a list of exactly one)")
        prompt = body.prompt[0]
    else:
        prompt = body.prompt
    stop = (body.stop,) if isinstance(body.stop, str) else tuple(body.stop or ())
    return CompletionRequest(
        prompt=prompt,
        max_tokens=max_tokens,
        temperature=body.temperature,
        stop=stop,
        json_schema=body.json_schema,
        seed=body.seed,
    )


def _chunks(
    pieces: Iterator[str | Completion],
    head: dict[str, Any],
    include_usage: bool,
    control: Control,
) -> Generator[dict[str, Any], None, None]:
    told = False
    for piece in pieces:
        if isinstance(piece, str):
            chunk = {**head, "choices": [_choice(piece, None)]}
            if not told and control.prompt_tokens is not None:
                # Not OpenAI's: the prompt's count on the first chunk, so a client that
                # leaves before the last chunk's usage still knows what the prompt cost.
                chunk[PROMPT_TOKENS_FIELD] = control.prompt_tokens
                told = True
            yield chunk
            continue
        yield {**head, "choices": [_choice("", piece.finish_reason)]}
        if include_usage:  # OpenAI's last chunk: no choices, the usage of the whole
            yield {**head, "choices": [], "usage": usage(piece), "timings": timings(piece)}


def completions_router(worker: Worker) -> APIRouter:
    router = APIRouter()

    @router.post("/completions", summary="Text completion (OpenAI-compatible)")
    def create_completion(body: CompletionBody, request: Request) -> Response:
        refuse_unsupported(body)
        model = worker.model(body.model, request)
        completion_request = _request(body, worker.check_max_tokens(body.max_tokens))
        head = {
            "id": f"cmpl-{uuid.uuid4().hex}",
            "object": "text_completion",
            "created": int(time.time()),
            "model": model.id,
        }
        if body.stream:
            include_usage = bool(body.stream_options and body.stream_options.include_usage)
            control = Control()
            streamed = dataclasses.replace(completion_request, control=control)
            pieces = Primed(worker.engine.stream(model, streamed))
            events = _chunks(pieces, head, include_usage, control)
            return sse(events, ran(model), pieces, control.cancel)
        done = worker.engine.complete(model, completion_request)
        content = {
            **head,
            "choices": [_choice(done.text, done.finish_reason)],
            "usage": usage(done),
            "timings": timings(done),
        }
        return JSONResponse(content, headers=ran(model))

    return router
