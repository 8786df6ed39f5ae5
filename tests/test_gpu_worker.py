"""The GPU worker for real: uvicorn on loopback, llama.cpp with Gemma 3 270M, MiniLM, and the
platform's adapters calling it through the official ``openai`` client."""

from __future__ import annotations

import json
import shutil
import socket
import struct
import time
from collections.abc import Generator, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import httpx
import numpy as np
import openai
import pytest
from fastapi.testclient import TestClient
from live_server import serving
from pydantic import SecretStr
from workflow_polling import finish

from functions import indexed_app, runtime
from hartonomous.api.app import create_app
from hartonomous.bootstrap import Platform, bootstrap
from hartonomous.domain.tenants import Scope
from hartonomous.errors import Conflict, ServiceUnavailable
from hartonomous.inference.llama_engine import LlamaEngine
from hartonomous.inference.model_files import builtin_model
from hartonomous.inference.openai_http import WorkerEmbedder, WorkerInference
from hartonomous.inference.types import BUILTIN_MODEL, Completion, CompletionRequest, ModelRef
from hartonomous.knowledge.embeddings import MINILM
from hartonomous.models.synthetic import write_synthetic_gguf
from hartonomous.services import tenants as tenant_service
from hartonomous.settings import Settings
from hartonomous.worker import create_worker_app

KEY = "worker-key-for-tests"
PROMPT = CompletionRequest("The capital of France is", max_tokens=8, temperature=0.0)
SCHEMA = {
    "type": "object",
    "properties": {"answer": {"type": "string", "maxLength": 20}},
    "required": ["answer"],
}
# Gemma's turn markup; the built-in GGUF has no chat template, the tenant's copy gets this one.
TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}"
    "<start_of_turn>{{ 'model' if m['role'] == 'assistant' else 'user' }}\n"
    "{{ m['content'] | trim }}<end_of_turn>\n{% endfor %}"
    "{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}"
)
TEXTS = ["Mars has the tallest volcano.", "Olympus Mons", "Jupiter's Great Red Spot is a storm."]


def with_chat_template(src: Path, dst: Path) -> Path:
    """``src`` with a ``tokenizer.chat_template`` added as the first key. The key is padded to
    a whole number of 32-byte alignments, so the tensor data moves by whole alignments and
    every tensor offset stays right."""
    key = b"tokenizer.chat_template"

    def kv(value: bytes) -> bytes:
        return struct.pack(f"<Q{len(key)}sIQ", len(key), key, 8, len(value)) + value

    value = TEMPLATE.encode()
    value += b" " * (-len(kv(value)) % 32)
    with src.open("rb") as f, dst.open("wb") as out:
        magic, version, tensors, kvs = struct.unpack("<4sIQQ", f.read(24))
        out.write(struct.pack("<4sIQQ", magic, version, tensors, kvs + 1) + kv(value))
        shutil.copyfileobj(f, out, 1 << 20)
    return dst


@pytest.fixture(scope="module")
def wp(tmp_path_factory: pytest.TempPathFactory, embedder) -> Iterator[Platform]:
    """The platform the worker reads tenants' models from (and ingests them, for the test)."""
    settings = Settings(
        data_dir=tmp_path_factory.mktemp("worker") / "data",
        inference_context_tokens=1024,
        inference_threads=2,
        generation_max_tokens=256,
        worker_key=SecretStr(KEY),
    )
    p = bootstrap(settings, functions=indexed_app().get_functions(), embedder=embedder)
    runtime.use(p)
    yield p
    runtime.use(None)
    p.close()


@pytest.fixture(scope="module")
def url(wp: Platform, embedder) -> Iterator[str]:
    """The worker as it is deployed (its own engine from settings), on a free loopback port."""
    app = create_worker_app(wp.settings, embedder=embedder, platform=wp)
    with serving(app) as base:
        yield base


@pytest.fixture(scope="module")
def oai(url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{url}/v1", api_key=KEY, max_retries=0)


@pytest.fixture(scope="module")
def inference(url: str) -> WorkerInference:
    return WorkerInference(url, KEY)


@pytest.fixture(scope="module")
def builtin() -> ModelRef:
    return builtin_model()


@pytest.fixture(scope="module")
def expected(llama: LlamaEngine, builtin: ModelRef):
    """The in-process engine's completion of PROMPT: what the worker must give too."""
    return llama.complete(builtin, PROMPT)


@pytest.fixture(scope="module")
def chat_model(wp: Platform, gemma: Path, tmp_path_factory: pytest.TempPathFactory) -> ModelRef:
    """A tenant's model that has a chat template: Gemma's weights under a new SHA-256,
    ingested as tensor atoms, so the worker reads it back from the blob store."""
    path = with_chat_template(gemma, tmp_path_factory.mktemp("chat") / "gemma-chat.gguf")
    tenant_id, auth = tenant_with_key(wp, "acme")
    who = SimpleNamespace(auth=lambda scope="write": auth)
    with TestClient(create_app(wp)) as api, path.open("rb") as f:
        started = api.post("/v1/models", content=f, headers=auth)
        assert started.status_code == 202, started.text
        assert finish(api, who, started.json(), timeout=300)["runtimeStatus"] == "Completed"
        record = api.get(f"/v1/models/{started.json()['model_id']}", headers=auth).json()
    assert record["status"] == "ready" and record["chat_template"] is True
    return ModelRef(record["id"], record["sha256"], record["name"], tenant_id)


def tenant_with_key(platform: Platform, name: str) -> tuple[str, dict[str, str]]:
    """A tenant and the headers of its write key (module fixtures cannot use ``tenant_maker``)."""
    tenant, _ = tenant_service.create_tenant(platform.uow_factory, name=name)
    key = tenant_service.create_key(platform.uow_factory, tenant=name, scope=Scope.WRITE)
    return tenant.id, {"Authorization": f"Bearer {key.secret}"}


def problem(response: httpx.Response, status: int) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body: dict = response.json()
    assert body["status"] == status and body["detail"]
    return body


# -- completions ---------------------------------------------------------------------------------


def test_the_worker_completes_as_the_engine_does_in_process(
    inference: WorkerInference, builtin: ModelRef, expected, url: str
):
    done = inference.complete(builtin, PROMPT)
    assert done.text == expected.text and done.text.strip()
    assert done.finish_reason == expected.finish_reason
    assert (done.prompt_tokens, done.completion_tokens) == (
        expected.prompt_tokens,
        expected.completion_tokens,
    )
    assert 0 < done.prompt_tokens < 12 and 0 < done.completion_tokens <= PROMPT.max_tokens
    assert 0 < done.prompt_ms <= done.generation_ms

    health = httpx.get(f"{url}/healthz")  # open: no key
    assert health.status_code == 200
    assert health.json() == {"status": "ok", "models_loaded": [BUILTIN_MODEL]}


def test_a_stream_is_pieces_then_the_completion(inference: WorkerInference, builtin, expected):
    *pieces, done = list(inference.stream(builtin, PROMPT))
    texts = [p for p in pieces if isinstance(p, str)]
    assert texts and texts == pieces and isinstance(done, Completion)
    assert "".join(texts) == done.text == expected.text
    assert done.completion_tokens == expected.completion_tokens

    stream = cast(Generator, inference.stream(builtin, CompletionRequest(PROMPT.prompt, 200)))
    assert isinstance(next(stream), str)
    stream.close()  # the caller goes away mid-stream: the worker lets go of the model
    started = time.perf_counter()
    assert inference.complete(builtin, PROMPT).text == expected.text
    assert time.perf_counter() - started < 5


def test_a_json_schema_constrains_the_output(inference: WorkerInference, builtin: ModelRef):
    request = CompletionRequest(
        "Question: what is the capital of France? Answer as JSON.\n",
        max_tokens=48,
        json_schema=SCHEMA,
    )
    done = inference.complete(builtin, request)
    assert done.finish_reason == "stop", done
    answer = json.loads(done.text)
    assert set(answer) == {"answer"} and isinstance(answer["answer"], str)


def test_the_openai_client_completes_and_streams(oai: openai.OpenAI, expected):
    response = oai.completions.create(
        model=BUILTIN_MODEL, prompt=PROMPT.prompt, max_tokens=8, temperature=0
    )
    assert response.choices[0].text == expected.text
    assert response.usage is not None
    assert response.usage.prompt_tokens == expected.prompt_tokens
    assert response.usage.total_tokens == expected.prompt_tokens + expected.completion_tokens
    assert set((response.model_extra or {})["timings"]) == {"prompt_ms", "generation_ms"}

    chunks = list(
        oai.completions.create(
            model=BUILTIN_MODEL,
            prompt=PROMPT.prompt,
            max_tokens=8,
            temperature=0,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert "".join(c.choices[0].text for c in chunks if c.choices) == expected.text
    assert chunks[-2].choices[0].finish_reason == expected.finish_reason
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == expected.completion_tokens
    assert all(c.usage is None for c in chunks[:-1])


# -- chat ----------------------------------------------------------------------------------------


def test_chat_needs_a_chat_template(oai: openai.OpenAI, llama: LlamaEngine, builtin: ModelRef):
    llm, _ = llama.loaded(builtin)
    assert "tokenizer.chat_template" not in llm.metadata  # so the worker refuses
    with pytest.raises(openai.UnprocessableEntityError) as caught:
        oai.chat.completions.create(
            model=BUILTIN_MODEL, messages=[{"role": "user", "content": "Hi"}], max_tokens=4
        )
    assert caught.value.response.headers["content-type"] == "application/problem+json"
    assert "no chat template" in caught.value.response.json()["detail"]


def test_chat_on_a_tenants_model_with_a_template(oai: openai.OpenAI, chat_model: ModelRef):
    headers = {"X-Hartonomous-Tenant": chat_model.tenant_id or ""}
    messages: list[Any] = [{"role": "user", "content": "What is the capital of France?"}]
    reply = oai.chat.completions.create(
        model=chat_model.id, messages=messages, max_tokens=6, temperature=0, extra_headers=headers
    )
    assert reply.model == chat_model.id and reply.choices[0].message.role == "assistant"
    assert reply.choices[0].message.content and reply.usage is not None
    assert reply.usage.prompt_tokens > 10 and 0 < reply.usage.completion_tokens <= 6

    chunks = list(
        oai.chat.completions.create(
            model=chat_model.id,
            messages=messages,
            max_tokens=6,
            temperature=0,
            stream=True,
            stream_options={"include_usage": True},
            extra_headers=headers,
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == reply.choices[0].message.content
    assert chunks[-1].choices == [] and chunks[-1].usage == reply.usage

    json_schema: Any = {"type": "json_schema", "json_schema": {"name": "a", "schema": SCHEMA}}
    shaped = oai.chat.completions.create(
        model=chat_model.id,
        messages=[{"role": "user", "content": "What is the capital of France? Answer in JSON."}],
        max_tokens=48,
        temperature=0,
        response_format=json_schema,
        extra_headers=headers,
    )
    assert set(json.loads(shaped.choices[0].message.content or "")) == {"answer"}


def test_a_tenants_model_runs_by_id_with_its_weights(
    inference: WorkerInference, chat_model: ModelRef, expected, url: str
):
    done = inference.complete(chat_model, PROMPT)  # Gemma's weights: Gemma's greedy text
    assert done.text == expected.text
    loaded = httpx.get(f"{url}/healthz").json()["models_loaded"]
    assert f"sha256:{chat_model.sha256}" in loaded and chat_model.id not in str(loaded)


# -- embeddings ----------------------------------------------------------------------------------


def test_embeddings_are_the_in_process_vectors(oai: openai.OpenAI, embedder, url: str):
    local = embedder.embed(TEXTS).astype(np.float32)
    for encoding in (openai.omit, "float"):  # the client asks for base64 unless told
        response = oai.embeddings.create(
            model="all-MiniLM-L6-v2", input=TEXTS, encoding_format=encoding
        )
        remote = np.array([d.embedding for d in response.data], dtype=np.float32)
        assert remote.shape == (3, 384) and np.allclose(remote, local, atol=1e-3)
        assert response.model == embedder.model_name and response.usage.prompt_tokens > 3
    one = oai.embeddings.create(model=embedder.model_name, input=TEXTS[0])
    assert np.allclose(one.data[0].embedding, local[0], atol=1e-3)

    worker = WorkerEmbedder(url, KEY)
    assert worker.model_name == embedder.model_name  # stored vectors are keyed by it
    texts = [f"note {i}: {TEXTS[i % 3]}" for i in range(300)]  # two calls of at most 256
    remote = worker.embed(texts)
    assert remote.dtype == np.float32 and remote.shape == (300, 384)
    assert np.allclose(remote, embedder.embed(texts), atol=1e-3)
    assert np.allclose(np.linalg.norm(remote, axis=1), 1, atol=1e-5)
    assert worker.tokenizer.count(["Olympus Mons"]) == embedder.tokenizer.count(["Olympus Mons"])


# -- errors --------------------------------------------------------------------------------------


def test_errors_are_problems(url: str, wp: Platform, builtin: ModelRef, tmp_path: Path):
    auth = {"Authorization": f"Bearer {KEY}"}
    body = {"model": BUILTIN_MODEL, "prompt": "Hi", "max_tokens": 2}
    with httpx.Client(base_url=url) as http:
        for headers in ({}, {"Authorization": "Bearer nope"}, {"Authorization": KEY}):
            r = http.post("/v1/completions", json=body, headers=headers)
            assert problem(r, 401)["type"].endswith("/unauthenticated")
            assert r.headers["www-authenticate"] == "Bearer"
        assert problem(http.get("/v1/models"), 401)
        models = http.get("/v1/models", headers=auth).json()["data"]
        assert {m["id"] for m in models} >= {BUILTIN_MODEL, MINILM}

        tenant = {**auth, "X-Hartonomous-Tenant": "t-unknown"}
        r = http.post("/v1/completions", json={**body, "model": "m-unknown"}, headers=tenant)
        assert "m-unknown" in problem(r, 404)["detail"]
        r = http.post("/v1/completions", json={**body, "model": "m-unknown"}, headers=auth)
        assert "X-Hartonomous-Tenant" in problem(r, 400)["detail"]
        r = http.post(
            "/v1/completions",
            json=body,
            headers={**auth, "X-Hartonomous-Model-Sha256": "0" * 64},
        )
        assert problem(r, 409)["sha256"] == builtin.sha256
        assert r.headers["x-should-retry"] == "false"  # the openai client retries 409s

        r = http.post("/v1/embeddings", json={"input": []}, headers=auth)
        assert problem(r, 422)
        r = http.post("/v1/embeddings", json={"input": "x", "model": "ada"}, headers=auth)
        assert problem(r, 404)
        r = http.post("/v1/completions", json={**body, "max_tokens": 0}, headers=auth)
        assert problem(r, 422)["type"].endswith("/validation-error")
        r = http.post("/v1/completions", json={**body, "max_tokens": 257}, headers=auth)
        assert "at most 256" in problem(r, 422)["detail"]
        r = http.post("/v1/completions", json={**body, "echo": True}, headers=auth)
        assert "echo" in problem(r, 422)["detail"]

        # A model still being ingested: 409, not a half-read file.
        tenant_id, _ = tenant_with_key(wp, "ingesting")
        data = write_synthetic_gguf(tmp_path / "m.gguf").read_bytes()
        atom = wp.atoms.store_bytes(tenant_id=tenant_id, chunks=[data], media_type=None)
        record = wp.models.register(tenant_id, atom.atom, name="half")
        r = http.post(
            "/v1/completions",
            json={**body, "model": record.id},
            headers={**auth, "X-Hartonomous-Tenant": tenant_id},
        )
        assert "not ready" in problem(r, 409)["detail"]


def test_the_adapters_raise_domain_errors(url: str, builtin: ModelRef):
    pinned = ModelRef(builtin.id, "0" * 64, builtin.name)
    with pytest.raises(Conflict) as conflict:
        WorkerInference(url, KEY).complete(pinned, PROMPT)
    assert conflict.value.extensions["sha256"] == builtin.sha256

    with pytest.raises(ServiceUnavailable, match="HARTONOMOUS_WORKER_KEY"):
        WorkerInference(url, "wrong").complete(builtin, PROMPT)
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        nowhere = f"http://127.0.0.1:{free.getsockname()[1]}"
    with pytest.raises(ServiceUnavailable, match=nowhere):
        WorkerEmbedder(nowhere, KEY, max_retries=0).embed(["x"])
