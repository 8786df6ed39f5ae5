"""llama-server as the inference port (``LlamaServerEngine``): a real llama-server built by
``make llama-server`` (``make test`` builds it), Gemma 3 270M, on loopback."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from hartonomous.bootstrap import inference_factory
from hartonomous.errors import UnprocessableContent
from hartonomous.inference.llama_engine import LlamaEngine
from hartonomous.inference.llama_server import LlamaServerEngine, ServerOptions, default_binary
from hartonomous.inference.model_files import ModelFiles, builtin_model
from hartonomous.inference.types import Completion, CompletionRequest, Control, ModelRef
from hartonomous.settings import Settings

needs_server = pytest.mark.skipif(
    not default_binary().exists(),
    reason=f"llama-server is not built at {default_binary()}: run 'make llama-server'",
)
PROMPTS = [
    "Question: How do I turn a Python object into a JSON string?\nAnswer:",
    "Question: How can I make a temporary folder that is removed afterwards?\nAnswer:",
    "The three primary colours are",
    "def fibonacci(n):",
]
# Eight of them, of several lengths: 8 rows a decode step is where ggml's tiled K-quant
# kernel takes over from vec_dot (and 4 where repacked GEMM takes over from GEMV).
INVARIANCE_PROMPTS = [
    *PROMPTS,
    "Question: How do I read a file line by line?\nAnswer:",
    "Question: What does a hash function do, and why would a database index use one?\nAnswer:",
    "Once upon a time",
    "SELECT name FROM users WHERE",
]


@pytest.fixture(scope="module")
def server(gemma: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LlamaServerEngine]:
    if not default_binary().exists():
        pytest.skip(f"llama-server is not built at {default_binary()}: run 'make llama-server'")
    cache = tmp_path_factory.mktemp("server-models")
    (cache / f"{builtin_model().sha256}.gguf").symlink_to(gemma)
    engine = LlamaServerEngine(ModelFiles(cache), ServerOptions(n_ctx=1024, slots=8))
    yield engine
    engine.close()


@pytest.fixture(scope="module")
def model() -> ModelRef:
    return builtin_model()


def test_settings_choose_the_server_engine(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, inference_engine="llama-server", inference_slots=3)
    engine = inference_factory(settings, ModelFiles(tmp_path))()  # nothing starts until used
    assert isinstance(engine, LlamaServerEngine) and engine.options.slots == 3
    default = inference_factory(Settings(data_dir=tmp_path), ModelFiles(tmp_path))()
    assert isinstance(default, LlamaEngine)


@needs_server
def test_a_completion_has_the_exact_counts_and_text_of_llama_cpp_python(
    server: LlamaServerEngine, llama: LlamaEngine, model: ModelRef
) -> None:
    request = CompletionRequest(PROMPTS[0], max_tokens=24)
    done = server.complete(model, request)
    alone = llama.complete(model, request)
    assert (done.text, done.finish_reason) == (alone.text, alone.finish_reason)
    assert (done.prompt_tokens, done.completion_tokens) == (
        alone.prompt_tokens,
        alone.completion_tokens,
    )
    assert done.completion_tokens == 24 and done.finish_reason == "length"
    assert 0 < done.prompt_ms <= done.generation_ms
    assert server.count_tokens(model, "hello world") == llama.count_tokens(model, "hello world")
    assert server.context_length(model) == 1024
    assert server.loaded_sha256s() == [model.sha256]


@needs_server
def test_concurrent_requests_are_batched_with_exact_counts(
    server: LlamaServerEngine, model: ModelRef
) -> None:
    def run(prompt: str) -> Completion:
        return server.complete(model, CompletionRequest(prompt, max_tokens=48))

    alone = [run(p) for p in PROMPTS]
    with ThreadPoolExecutor(len(PROMPTS)) as pool:
        together = list(pool.map(run, PROMPTS))
    assert [c.prompt_tokens for c in together] == [c.prompt_tokens for c in alone]
    for done in together:
        assert done.finish_reason == "length" and done.completion_tokens == 48
        assert server.count_tokens(model, done.text) <= 48


@needs_server
def test_concurrent_requests_give_the_text_each_gives_alone(
    server: LlamaServerEngine, model: ModelRef
) -> None:
    """Batch-invariant greedy decoding: the receipt of a batched generation replays alone."""

    def run(prompt: str) -> str:
        return server.complete(model, CompletionRequest(prompt, max_tokens=40)).text

    alone = [run(p) for p in INVARIANCE_PROMPTS]
    with ThreadPoolExecutor(len(INVARIANCE_PROMPTS)) as pool:
        together = list(pool.map(run, INVARIANCE_PROMPTS))
        # Then staggered: prompts join while others decode (mixed prompt and decode steps).
        staggered = []
        for p in INVARIANCE_PROMPTS:
            staggered.append(pool.submit(run, p))
            time.sleep(0.15)
        joined = [f.result() for f in staggered]
    assert together == alone
    assert joined == alone


@needs_server
def test_a_json_schema_constrains_the_output(server: LlamaServerEngine, model: ModelRef) -> None:
    schema = {
        "type": "object",
        "properties": {
            "colour": {"type": "string", "enum": ["red", "green", "blue"]},
            "count": {"type": "integer", "minimum": 0, "maximum": 9},
        },
        "required": ["colour", "count"],
        "additionalProperties": False,
    }
    request = CompletionRequest("Pick a colour and a count:", max_tokens=64, json_schema=schema)
    done = server.complete(model, request)
    value = json.loads(done.text)
    assert set(value) == {"colour", "count"} and value["colour"] in {"red", "green", "blue"}
    assert 0 <= value["count"] <= 9  # llama.cpp's converter keeps "maximum"
    assert done.finish_reason == "stop" and done.completion_tokens > 0


@needs_server
def test_closing_the_stream_stops_the_slot(server: LlamaServerEngine, model: ModelRef) -> None:
    ran: list[int] = []
    control = Control(on_tokens=ran.append)
    pieces = server.stream(model, CompletionRequest(PROMPTS[3], max_tokens=900, control=control))
    for n, piece in enumerate(pieces):
        if isinstance(piece, Completion):
            break
        if n == 3:
            control.cancel()
    assert isinstance(piece, Completion) and piece.finish_reason == "cancelled"
    assert 3 < piece.completion_tokens < 10  # billed for what ran, not for 900
    assert sum(ran) == piece.prompt_tokens + piece.completion_tokens
    # The server stopped the slot too: no slot is still generating for the gone client.
    srv = next(iter(server._servers.values()))
    for _ in range(100):
        slots = srv.client.get(f"{srv.url}/slots").json()
        if not any(s["is_processing"] for s in slots):
            break
        threading.Event().wait(0.05)
    assert not any(s["is_processing"] for s in slots)


@needs_server
def test_a_prompt_past_the_context_is_refused(server: LlamaServerEngine, model: ModelRef) -> None:
    with pytest.raises(UnprocessableContent, match="holds 1024"):
        server.complete(model, CompletionRequest("word " * 1100, max_tokens=8))


@needs_server
def test_a_crashed_server_is_restarted_on_the_next_request(
    server: LlamaServerEngine, model: ModelRef
) -> None:
    srv = next(iter(server._servers.values()))
    first = srv._proc
    assert first is not None
    first.kill()
    first.wait()
    done = server.complete(model, CompletionRequest(PROMPTS[2], max_tokens=8))
    assert done.completion_tokens == 8 and srv._proc is not None and srv._proc is not first
    with pytest.raises(httpx.HTTPStatusError):  # the key keeps other local users off the slots
        httpx.post(f"{srv.url}/completion", json={"prompt": "x"}).raise_for_status()
