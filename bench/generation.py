"""Generation benchmarks, side by side in one run (this machine, CPU only):

1. Tokens per second through ``POST /v1/generate`` (a real ``hartonomous serve``: hybrid
   retrieval, prompt assembly, Gemma 3 270M in llama.cpp, the receipt's transaction, HTTP)
   vs raw llama-cpp-python on the same model, the same prompt (the receipt's prompt atom)
   and the same settings, alternated. Both produce the same greedy text, so the ratio of
   tokens per second is the ratio of wall times. Goal: at least 0.95 of raw.
2. Receipt persistence per generation: ``GenerationService.record`` (prompt, output and
   model-card atoms, receipt, edges, usage rows, outbox event, one transaction) on the
   store the server used, p50/p95. Goal: p95 under 5 ms.
3. The GPU worker over HTTP (its own process on loopback, the official OpenAI protocol) vs
   the same engine in process, tokens per second on the same prompts.

    python bench/generation.py [--questions 8] [--max-tokens 64] [--records 300]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from _server import free_port, serving  # noqa: E402
from knowledge import stdlib_documents  # noqa: E402

from hartonomous.bootstrap import bootstrap  # noqa: E402
from hartonomous.generation.prompting import DEFAULT_STOP, Assembled  # noqa: E402
from hartonomous.generation.service import GenerateRequest, Outcome  # noqa: E402
from hartonomous.inference.llama_engine import EngineOptions, LlamaEngine, open_llama  # noqa: E402
from hartonomous.inference.model_files import ModelFiles, builtin_model  # noqa: E402
from hartonomous.inference.types import Completion, CompletionRequest  # noqa: E402
from hartonomous.knowledge.search import Mode  # noqa: E402
from hartonomous.services import tenants as tenant_service  # noqa: E402
from hartonomous.services.clock import new_id  # noqa: E402
from hartonomous.settings import Settings  # noqa: E402

QUESTIONS = [
    "How do I read command-line options and arguments in a script?",
    "How can I run a function only after a delay, in another thread?",
    "What is a quick way to compare two sequences and list their differences?",
    "How do I keep the most recent results of an expensive function call?",
    "How can I make a temporary folder that is removed afterwards?",
    "How do I turn a Python object into a JSON string?",
    "How do I write rows of values to a comma-separated file?",
    "How do I wait for a child process and read what it printed?",
    "How do I find all files matching a pattern like *.txt?",
    "How do I generate a random integer in a range?",
]
DOCUMENTS = ["argparse", "threading", "difflib", "functools", "tempfile", "json", "csv",
             "subprocess", "glob", "random", "pathlib", "shutil"]  # fmt: skip
THREADS = 2


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def prepare(data_dir: Path) -> tuple[str, str]:
    """A tenant (its write key, its id) in a fresh store."""
    platform = bootstrap(Settings(data_dir=data_dir))
    tenant, issued = tenant_service.create_tenant(platform.uow_factory, name="bench")
    platform.close()
    return issued.secret, tenant.id


def ingest(client: httpx.Client, documents: dict[str, str]) -> None:
    started = []
    for name in DOCUMENTS:
        r = client.post(
            "/v1/ingestions",
            content=documents[name].encode(),
            headers={
                "Content-Type": "text/markdown",
                "X-Atom-Metadata": json.dumps({"filename": f"{name}.md"}),
            },
        )
        r.raise_for_status()
        started.append(r.json()["status_url"])
    for url in started:
        while client.get(url).json()["runtimeStatus"] not in ("Completed", "Failed"):
            time.sleep(0.2)


def bench_generate(url: str, key: str, args: argparse.Namespace, raw: Any) -> dict[str, Any]:
    rounds = []
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=600) as c:
        ingest(c, stdlib_documents())
        c.post("/v1/generate", json={"prompt": "Warm up.", "max_tokens": 4}).raise_for_status()
        for question in QUESTIONS[: args.questions]:
            body = {"prompt": question, "max_tokens": args.max_tokens, "k": 3}
            start = time.perf_counter()
            r = c.post("/v1/generate", json=body)
            e2e = time.perf_counter() - start
            r.raise_for_status()
            receipt = r.json()["receipt"]
            prompt_atom = receipt["components"][0]["atom_id"]
            prompt = c.get(f"/v1/atoms/{prompt_atom}/content").text
            # The whole prompt, as the engine evaluates it: by default llama-cpp-python would
            # reuse the previous question's cached prefix, which changes the greedy text.
            raw.reset()
            start = time.perf_counter()
            out: Any = raw.create_completion(
                prompt, max_tokens=args.max_tokens, temperature=0.0, stop=list(DEFAULT_STOP)
            )
            raw_s = time.perf_counter() - start
            tokens = out["usage"]["completion_tokens"]
            rounds.append({
                "e2e_s": e2e, "raw_s": raw_s, "tokens": tokens,
                "receipt_tokens": receipt["tokens"]["completion"],
                "same_text": out["choices"][0]["text"] == r.json()["text"],
                "prompt_tokens": receipt["tokens"]["prompt"],
                "timings": receipt["timings_ms"],
            })  # fmt: skip
    return {"rounds": rounds}


def bench_records(data_dir: Path, tenant_id: str, count: int) -> dict[str, float]:
    """``record`` alone, on the server's store, with real retrieved chunks as components."""
    platform = bootstrap(Settings(data_dir=data_dir))
    service = platform.generation
    hits = platform.knowledge.get().search.search(
        tenant_id=tenant_id, query=QUESTIONS[0], k=3, mode=Mode.HYBRID
    )
    request = GenerateRequest(prompt=QUESTIONS[0], k=3)
    model = builtin_model()
    took = []
    for i in range(count):
        assembled = Assembled(f"prompt {i}: " + QUESTIONS[0], hits, 0)
        completion = Completion(f"answer number {i}", "stop", 120, 17, 5.0, 300.0)
        start = time.perf_counter()
        service.record(Outcome(new_id(), tenant_id, request, model, assembled, completion, {}))
        took.append((time.perf_counter() - start) * 1000)
    platform.close()
    return {"p50_ms": pct(took, 50), "p95_ms": pct(took, 95), "count": count}


def bench_worker(data_dir: Path, args: argparse.Namespace, engine: LlamaEngine) -> dict[str, Any]:
    from hartonomous.inference.openai_http import WorkerInference

    port = free_port()
    key = "bench-worker-key"  # the worker refuses to start without one
    env = {**os.environ, "HARTONOMOUS_DATA_DIR": str(data_dir), "HARTONOMOUS_WORKER_KEY": key,
           "HARTONOMOUS_INFERENCE_THREADS": str(THREADS)}  # fmt: skip
    worker = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "--factory", "hartonomous.worker.app:worker_app_from_env",
         "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(600):
            try:
                httpx.get(f"{url}/healthz").raise_for_status()
                break
            except httpx.TransportError:
                time.sleep(0.1)
        remote = WorkerInference(url, key)
        model = builtin_model()
        rounds = []
        for question in ["Warm up.", *QUESTIONS[: args.questions]]:
            request = CompletionRequest(
                f"Question: {question}\nAnswer:", max_tokens=args.max_tokens, stop=DEFAULT_STOP
            )
            start = time.perf_counter()
            there = remote.complete(model, request)
            http_s = time.perf_counter() - start
            start = time.perf_counter()
            here = engine.complete(model, request)
            local_s = time.perf_counter() - start
            rounds.append({"http_s": http_s, "local_s": local_s, "tokens": here.completion_tokens,
                           "same_text": here.text == there.text})  # fmt: skip
        return {"rounds": rounds[1:]}
    finally:
        worker.terminate()
        worker.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--questions", type=int, default=8)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--records", type=int, default=300)
    parser.add_argument("--skip", nargs="*", default=[], choices=["worker"])
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    with tempfile.TemporaryDirectory(prefix="hartonomous-gen-") as tmp:
        data_dir = Path(tmp) / "data"
        key, tenant_id = prepare(data_dir)
        files = ModelFiles(Settings(data_dir=data_dir).resolved_model_cache_dir)
        gguf = files.path(builtin_model())
        # The engine's kernels (unpacked weights, no tiled matmul): the texts must match.
        # bench/batching.py holds their speed to llama-cpp-python's defaults.
        raw = open_llama(str(gguf), n_ctx=4096, n_threads=THREADS, verbose=False)
        env = {**os.environ, "HARTONOMOUS_INFERENCE_THREADS": str(THREADS)}
        with serving(data_dir, env) as (url, _):
            generate = bench_generate(url, key, args, raw)
        del raw
        records = bench_records(data_dir, tenant_id, args.records)
        worker: dict[str, Any] = {"rounds": []}
        if "worker" not in args.skip:
            engine = LlamaEngine(files, EngineOptions(n_ctx=4096, n_threads=THREADS))
            worker = bench_worker(data_dir, args, engine)

    g = generate["rounds"]
    e2e_rate = [r["tokens"] / r["e2e_s"] for r in g]
    raw_rate = [r["tokens"] / r["raw_s"] for r in g]
    print(f"generation benchmarks on {os.cpu_count()} cores (CPU), Gemma 3 270M Q4_K_M, "
          f"llama.cpp {THREADS} threads, max_tokens {args.max_tokens}, temperature 0")  # fmt: skip
    print(f"1. /v1/generate (HTTP, k=3) vs raw llama-cpp-python, {len(g)} questions, alternated")
    for i, r in enumerate(g, 1):
        print(f"   q{i}: {r['prompt_tokens']:4d} prompt + {r['tokens']:3d} tokens, "
              f"generate {r['e2e_s'] * 1000:7.1f} ms, raw {r['raw_s'] * 1000:7.1f} ms, "
              f"ratio {r['raw_s'] / r['e2e_s']:.3f}, search {r['timings']['search_ms']:.1f} ms, "
              f"same text {r['same_text']}")  # fmt: skip
    total_ratio = sum(r["raw_s"] for r in g) / sum(r["e2e_s"] for r in g)
    print(f"   tokens/s median: generate {statistics.median(e2e_rate):.1f}, raw "
          f"{statistics.median(raw_rate):.1f}; ratio over all tokens {total_ratio:.3f}, "
          f"median {statistics.median(r['raw_s'] / r['e2e_s'] for r in g):.3f}"
          "   (goal >= 0.95)")  # fmt: skip
    print(f"2. receipt persistence ({records['count']} receipts): p50 {records['p50_ms']:.2f} ms, "
          f"p95 {records['p95_ms']:.2f} ms   (goal p95 < 5 ms)")  # fmt: skip
    w = worker["rounds"]
    if w:
        print(f"3. worker over HTTP vs in process, {len(w)} prompts: tokens/s "
              f"{sum(r['tokens'] for r in w) / sum(r['http_s'] for r in w):.1f} vs "
              f"{sum(r['tokens'] for r in w) / sum(r['local_s'] for r in w):.1f} "
              f"(ratio {sum(r['local_s'] for r in w) / sum(r['http_s'] for r in w):.3f}), "
              f"same text {sum(r['same_text'] for r in w)}/{len(w)}")  # fmt: skip
    print(json.dumps({"generate": generate, "records": records, "worker": worker}))


if __name__ == "__main__":
    main()
