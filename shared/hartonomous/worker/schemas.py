"""Request bodies: llama-cpp-python's OpenAI models, plus what the platform needs.

Subclassed rather than rewritten, so the worker accepts what llama-cpp-python's own server
accepts; the additions are ``stream_options``, the ``json_schema`` extension on completions,
OpenAI's ``json_schema`` response format on chat, and the embedding encoding.
"""

from __future__ import annotations

from typing import Any, Literal

from llama_cpp.server.types import (
    CreateChatCompletionRequest,
    CreateCompletionRequest,
    CreateEmbeddingRequest,
)
from pydantic import BaseModel, Field

from hartonomous.errors import UnprocessableContent

MAX_EMBEDDING_INPUTS = 2048  # OpenAI's limit per request


class StreamOptions(BaseModel):
    include_usage: bool = False


class CompletionBody(CreateCompletionRequest):
    """OpenAI completion; sampling is the platform engine's: the fields below, no others."""

    max_tokens: int = Field(default=16, ge=1)
    stream_options: StreamOptions | None = None
    json_schema: dict[str, Any] | None = Field(
        default=None, description="Extension: a JSON Schema the output must match (a grammar)."
    )


# Fields a completion may set to anything; the rest only to a value that changes nothing.
COMPLETION_FIELDS = {
    "model", "prompt", "max_tokens", "temperature", "stop", "seed", "stream",
    "stream_options", "json_schema", "user",
}  # fmt: skip
NEUTRAL: dict[str, tuple[Any, ...]] = {
    "top_p": (1.0,),
    "presence_penalty": (0.0,),
    "frequency_penalty": (0.0,),
    "repeat_penalty": (1.0,),
    "logit_bias": ({},),
}


def refuse_unsupported(body: CompletionBody) -> None:
    """422 for options the engine cannot honour, rather than silently other output."""
    for name in sorted(body.model_fields_set - COMPLETION_FIELDS):
        value = getattr(body, name)
        if value != type(body).model_fields[name].default and value not in NEUTRAL.get(name, ()):
            raise UnprocessableContent(
                f"{name}={value!r} is not supported: completions here take prompt, "
                "max_tokens, temperature, stop, seed and json_schema",
                field=name,
            )


class JsonSchemaFormat(BaseModel):
    name: str = "response"
    schema_: dict[str, Any] = Field(default_factory=dict, alias="schema")
    strict: bool | None = None


class ResponseFormat(BaseModel):
    """OpenAI's ``response_format`` (llama-cpp-python's own knows only json_object)."""

    type: Literal["text", "json_object", "json_schema"] = "text"
    json_schema: JsonSchemaFormat | None = None
    schema_: dict[str, Any] | None = Field(default=None, alias="schema")  # llama-cpp style

    def schema_or_none(self) -> dict[str, Any] | None:
        if self.type == "json_schema":
            if self.json_schema is None:
                raise UnprocessableContent("response_format json_schema needs its json_schema")
            return self.json_schema.schema_
        return self.schema_


class ChatBody(CreateChatCompletionRequest):
    max_tokens: int | None = Field(default=None, ge=1)
    stream_options: StreamOptions | None = None
    response_format: ResponseFormat | None = None  # type: ignore[assignment]


class EmbeddingBody(CreateEmbeddingRequest):
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = Field(default=None, ge=1)

    def texts(self) -> list[str]:
        texts = [self.input] if isinstance(self.input, str) else list(self.input)
        if not texts:
            raise UnprocessableContent("input holds no text to embed")
        if len(texts) > MAX_EMBEDDING_INPUTS:
            raise UnprocessableContent(
                f"input holds {len(texts)} texts; at most {MAX_EMBEDDING_INPUTS} per request",
                limit=MAX_EMBEDDING_INPUTS,
            )
        return texts
