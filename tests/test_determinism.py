"""Temperature-0 generations reproduce from their receipts, whatever ran before them.

The cause this guards against (issue 16): llama-cpp-python keeps the KV cache of the last
prompt and, by default, evaluates only what follows the longest common prefix. The rest is
then evaluated in other batch shapes, the float sums round differently, and a greedy near-tie
flips: after a warm-up prompt sharing the header, 5 of bench/generation.py's 8 questions gave
another text than their whole prompt does (``tests/data/determinism_prompts.json`` holds two).
The engine evaluates every prompt whole (``llm.reset()``); raw llama-cpp-python on a fresh
model is the reference a receipt is checked against.

Under llama-server a prompt is cut into steps by whatever else is in the batch, so the
kernels themselves must not depend on how many rows a step holds: the last tests here cut
prompts every way and compare logits bit for bit.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import llama_cpp
import numpy as np
import pytest
from fastapi.testclient import TestClient

from conftest import make_tenant
from hartonomous.api.app import create_app
from hartonomous.bootstrap import bootstrap
from hartonomous.generation.prompting import DEFAULT_STOP, HEADER
from hartonomous.inference.llama_engine import (
    LLAMA_BUILD,
    EngineOptions,
    LlamaEngine,
    open_llama,
)
from hartonomous.inference.model_files import ModelFiles, builtin_model
from hartonomous.inference.types import CompletionRequest
from hartonomous.settings import Settings

PROMPTS: list[str] = json.loads(
    (Path(__file__).parent / "data" / "determinism_prompts.json").read_text("utf-8")
)["prompts"]
WARM_UP = HEADER + "Question: Warm up.\nAnswer:"  # shares the prompts' first tokens
N_CTX, THREADS, MAX_TOKENS = 1024, 2, 64


def raw_text(gemma: Path, prompt: str, max_tokens: int = MAX_TOKENS) -> str:
    """What raw llama-cpp-python writes for ``prompt`` on a freshly loaded model (with the
    engine's batch-invariant kernels, ``open_llama``)."""
    llm = open_llama(
        str(gemma), n_ctx=N_CTX, n_threads=THREADS, n_threads_batch=THREADS, verbose=False
    )
    out: Any = llm.create_completion(
        prompt, max_tokens=max_tokens, temperature=0.0, stop=list(DEFAULT_STOP)
    )
    return str(out["choices"][0]["text"])


def fresh_engine(cache: Path) -> LlamaEngine:
    return LlamaEngine(ModelFiles(cache), EngineOptions(n_ctx=N_CTX, n_threads=THREADS))


def test_a_generation_does_not_depend_on_the_one_before(gemma: Path, tmp_path: Path) -> None:
    engine, model = fresh_engine(tmp_path / "models"), builtin_model()

    def complete(prompt: str, max_tokens: int = MAX_TOKENS) -> str:
        return engine.complete(model, CompletionRequest(prompt, max_tokens, stop=DEFAULT_STOP)).text

    complete(WARM_UP, 4)
    after_warm_up = [complete(p) for p in PROMPTS]
    assert after_warm_up == [raw_text(gemma, p) for p in PROMPTS]
    assert [complete(p) for p in reversed(PROMPTS)] == after_warm_up[::-1]


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[TestClient, dict[str, str]]]:
    """The API on a store of its own and a freshly loaded model: its first generation is
    the model's first."""
    platform = bootstrap(
        Settings(data_dir=tmp_path / "data", inference_context_tokens=N_CTX),
        inference=fresh_engine(tmp_path / "models"),
    )
    tenant = make_tenant(platform, "alice")
    with TestClient(create_app(platform)) as client:
        yield client, tenant.auth("write")
    platform.close()


def test_receipts_replay_byte_for_byte_from_their_prompt_atoms(
    served: tuple[TestClient, dict[str, str]], gemma: Path
) -> None:
    client, auth = served
    for question in ("Warm up.", "What is the capital of France?", "Why is the sky blue?"):
        body = {"prompt": question, "k": 0, "max_tokens": MAX_TOKENS, "temperature": 0}
        r = client.post("/v1/generate", json=body, headers=auth)
        assert r.status_code == 200, r.text
        (prompt,) = [c for c in r.json()["receipt"]["components"] if c["role"] == "prompt"]
        atom = client.get(f"/v1/atoms/{prompt['atom_id']}/content", headers=auth)
        replayed = raw_text(gemma, atom.content.decode("utf-8"))
        assert replayed.encode("utf-8") == r.json()["text"].encode("utf-8"), question


PATCHES = Path(__file__).parent.parent / "scripts" / "llama-patches"


def test_the_installed_llama_cpp_is_the_patched_build() -> None:
    """The wheel and llama-server are built from llama.cpp with scripts/llama-patches
    applied and named by how many there are (Makefile); an unpatched wheel fails here."""
    patches = sorted(PATCHES.glob("*.patch"))
    assert len(patches) >= 1 and LLAMA_BUILD.endswith(f"+hartonomous{len(patches)}")
    assert llama_cpp.__version__ == LLAMA_BUILD


def cuts(n: int) -> list[tuple[int, ...]]:
    """Ways to evaluate ``n`` prompt tokens in steps: one token alone at every position, one
    token at a time, and seeded random cuts (llama-server cuts a prompt by the lengths of
    the other slots' work in the same batch)."""
    alone = [(p, p + 1) for p in range(1, n - 1)]
    rng = random.Random(16)
    scattered = [
        tuple(sorted(rng.sample(range(1, n), rng.randint(2, min(6, n - 1))))) for _ in range(8)
    ]
    return [*alone, tuple(range(1, n)), *scattered]


@pytest.mark.parametrize(
    "prompt",
    ["Question: How do I read a file line by line?\nAnswer:", "The three primary colours are"],
)
def test_logits_do_not_depend_on_how_the_prompt_is_cut_into_steps(gemma: Path, prompt: str) -> None:
    """Every position's logits, bit for bit. Every position's, because llama.cpp evaluates
    the last layer for the rows that give logits only: asked for the last token's alone, the
    unpatched kernels showed no difference here, asked for all they did (a token alone at
    position 4, 6, 8, 9, 10 or 14 of the first prompt), and llama-server gives logits for
    several rows of a step, one per sequence."""
    llm = open_llama(str(gemma), n_ctx=N_CTX, n_threads=THREADS, logits_all=True, verbose=False)
    tokens = llm.tokenize(prompt.encode("utf-8"))
    n = len(tokens)

    def logits(steps: tuple[int, ...]) -> np.ndarray:
        llm.reset()
        for a, b in zip((0, *steps), (*steps, n), strict=True):
            llm.eval(tokens[a:b])
        return np.array(llm.scores[:n])

    whole = logits(())
    differing: dict[tuple[int, ...], list[int]] = {}
    for steps in cuts(n):
        got = logits(steps)
        changed = [i for i in range(n) if not np.array_equal(got[i], whole[i])]
        if changed:
            differing[steps] = changed
    assert differing == {}, f"cut at these tokens, these positions' logits changed: {differing}"
