"""``POST /v1/embeddings``: the platform's embedder (MiniLM, the same code as in process).

OpenAI's clients ask for base64 unless told otherwise (float32, little-endian): a quarter
of the bytes of JSON numbers, and no float formatting on either side.
"""

from __future__ import annotations

import base64

import numpy as np
from fastapi import APIRouter
from fastapi.responses import JSONResponse

from hartonomous.errors import NotFound, UnprocessableContent
from hartonomous.ports import Embedder
from hartonomous.worker.context import Worker
from hartonomous.worker.schemas import EmbeddingBody


def embedding_names(embedder: Embedder) -> set[str]:
    """The embedder's name, with or without its organisation (``all-MiniLM-L6-v2``)."""
    return {embedder.model_name, embedder.model_name.rsplit("/", 1)[-1]}


def embeddings_router(worker: Worker) -> APIRouter:
    router = APIRouter()
    embedder = worker.embedder

    @router.post("/embeddings", summary="Embeddings (OpenAI-compatible)")
    def create_embeddings(body: EmbeddingBody) -> JSONResponse:
        if body.model is not None and body.model not in embedding_names(embedder):
            raise NotFound(
                f"no embedding model {body.model!r}: this worker embeds with "
                f"{embedder.model_name!r}"
            )
        if body.dimensions not in (None, embedder.dimension):
            raise UnprocessableContent(
                f"{embedder.model_name} gives {embedder.dimension} dimensions, not "
                f"{body.dimensions}"
            )
        texts = body.texts()
        vectors = np.ascontiguousarray(embedder.embed(texts), dtype="<f4")
        data = [
            {
                "object": "embedding",
                "index": i,
                "embedding": base64.b64encode(row.tobytes()).decode("ascii")
                if body.encoding_format == "base64"
                else row.tolist(),
            }
            for i, row in enumerate(vectors)
        ]
        tokens = sum(embedder.tokenizer.count(texts))
        usage = {"prompt_tokens": tokens, "total_tokens": tokens}
        return JSONResponse(
            {"object": "list", "data": data, "model": embedder.model_name, "usage": usage}
        )

    return router
