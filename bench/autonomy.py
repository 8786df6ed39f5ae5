"""The governed loop's cost, on the embedded platform (SQLite, MiniLM, Gemma 3 270M, CPU):

1. Per-phase overhead excluding model time: ``--runs`` whole loops (Analyze, Hypothesize,
   Approval, Act, Learn, then the run's end) through ``POST /v1/autonomy/runs`` and the real
   orchestration on the local Durable host, one after another, with the deterministic
   planner and every action approved by the policy, on a tenant with a small real corpus
   (stdlib docstrings) and recorded knowledge gaps. Each loop activity is timed around its
   call; the embedder and the inference engine are wrapped in timing proxies, and each
   model call is charged to the activity whose window holds it (runs are sequential). A
   phase's time is the sum of its activities (Approval: asking, settling and its audit row;
   Act: the baseline, the action and its audit row); without model time it is the platform's
   own overhead. Goal: p95 <= 50 ms a phase. (Hybrid search runs its keyword query on
   another thread while the query is embedded: SQL time inside an embedding's window is
   counted as model time, so the overhead is a little understated.) The orchestration's own
   cost (HTTP start, replay, history commits, dispatch) is the run's wall time less its
   activities, reported per run and per activity call.
2. Model time per Hypothesize with the real planner (Gemma 3 270M under the plan grammar),
   ``--model-runs`` loops after one warm-up: p50/p95 ms, tokens, tokens/s.
3. A whole loop's wall time on the embedded model (model planner, approved by the policy),
   from ``POST /v1/autonomy/runs`` to the workflow's completion: those same loops.

    python bench/autonomy.py [--runs 50] [--model-runs 5] [--documents 4]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import sqlalchemy as sa

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from fastapi.testclient import TestClient  # noqa: E402
from knowledge import stdlib_documents  # noqa: E402

from functions import indexed_app, runtime  # noqa: E402
from hartonomous.api.app import create_app  # noqa: E402
from hartonomous.autonomy.registry import REGISTRY  # noqa: E402
from hartonomous.bootstrap import Platform, bootstrap  # noqa: E402
from hartonomous.inference.llama_engine import EngineOptions, LlamaEngine  # noqa: E402
from hartonomous.inference.model_files import ModelFiles  # noqa: E402
from hartonomous.inference.types import Completion, CompletionRequest, ModelRef  # noqa: E402
from hartonomous.knowledge.embeddings import MiniLMEmbedder  # noqa: E402
from hartonomous.services import tenants as tenant_service  # noqa: E402
from hartonomous.services.clock import utcnow  # noqa: E402
from hartonomous.settings import Settings  # noqa: E402
from hartonomous.store import schema  # noqa: E402

PHASES = ["analyze", "hypothesize", "approval", "act", "learn", "finish"]
PHASE_OF = {
    "analyze": "analyze",
    "hypothesize": "hypothesize",
    "request_approvals": "approval",
    "settle_approval": "approval",
    "baseline": "act",
    "act": "act",
    "dead_letter": "act",
    "learn": "learn",
    "finish": "finish",
}  # record_phase: the phase named in its input
ACTIVITIES = [*PHASE_OF, "record_phase"]
# Everyday questions the stdlib corpus cannot answer: each is searched and recorded as a
# knowledge gap (best cosine under the threshold), so every loop has a problem to work on.
GAP_QUESTIONS = [
    "how long should I boil an egg",
    "what is the capital city of Peru",
    "how do I renew my passport",
    "which planet has the most moons",
    "how often should I water a cactus",
    "what is a good stretch for back pain",
    "how do I remove a red wine stain",
    "when is the best season to visit Japan",
    "how many calories are in a banana",
    "how do I change a flat bicycle tyre",
    "what breed of dog is best for children",
    "how do I tie a bow tie",
    "why is the sky blue",
    "how do I descale a kettle",
    "what is the tallest mountain in Africa",
    "how do I fix a squeaky door hinge",
    "what temperature should a fridge be",
    "how do I care for a sourdough starter",
    "who painted the Mona Lisa",
    "how do I jump start a car battery",
    "what is the offside rule in football",
    "how do I get rid of fruit flies",
    "which wine goes with salmon",
    "how do I unclog a sink drain",
    "how deep should I plant tulip bulbs",
    "what causes hiccups",
    "how do I fold a fitted sheet",
    "when do swallows migrate south",
    "how do I polish leather shoes",
    "what is the speed of sound in water",
]


# -- timing proxies ------------------------------------------------------------------------------


@dataclass
class Log:
    """Model calls and activity calls, each (name, start, end) in perf_counter seconds."""

    model: list[tuple[str, float, float]] = field(default_factory=list)
    activities: list[tuple[str, str, float, float]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add_model(self, kind: str, start: float) -> None:
        with self.lock:
            self.model.append((kind, start, time.perf_counter()))

    def add_activity(self, name: str, phase: str, start: float) -> None:
        with self.lock:
            self.activities.append((name, phase, start, time.perf_counter()))

    def clear(self) -> None:
        with self.lock:
            self.model.clear()
            self.activities.clear()


class TimedEmbedder:
    """The Embedder port around MiniLM, logging each call's window."""

    def __init__(self, inner: MiniLMEmbedder, log: Log) -> None:
        self.inner, self.log = inner, log
        self.model_name, self.dimension = inner.model_name, inner.dimension

    @property
    def tokenizer(self) -> Any:
        return self.inner.tokenizer

    def embed(self, texts: Sequence[str], *, spare_core: bool = False) -> Any:
        start = time.perf_counter()
        try:
            return self.inner.embed(texts, spare_core=spare_core)
        finally:
            self.log.add_model("embed", start)


class TimedInference:
    """The Inference port around llama.cpp, logging each call's window."""

    def __init__(self, inner: LlamaEngine, log: Log) -> None:
        self.inner, self.log = inner, log

    def complete(self, model: ModelRef, request: CompletionRequest) -> Completion:
        start = time.perf_counter()
        try:
            return self.inner.complete(model, request)
        finally:
            self.log.add_model("complete", start)

    def stream(self, model: ModelRef, request: CompletionRequest) -> Iterator[str | Completion]:
        start = time.perf_counter()
        try:
            yield from self.inner.stream(model, request)
        finally:
            self.log.add_model("complete", start)

    def __getattr__(self, name: str) -> Any:  # count_tokens, context_length, loaded...
        return getattr(self.inner, name)


def time_activities(platform: Platform, log: Log) -> None:
    """Wrap the loop's activities (functions/autonomy.py calls them on this object)."""
    loop = platform.autonomy_loop()
    for name in ACTIVITIES:
        method = getattr(loop, name)

        def timed(data: dict[str, Any], _m: Callable[..., Any] = method, _n: str = name) -> Any:
            start = time.perf_counter()
            try:
                return _m(data)
            finally:
                log.add_activity(_n, data.get("phase", "?") if _n == "record_phase" else
                                 PHASE_OF[_n], start)  # fmt: skip

        setattr(loop, name, timed)


# -- one run ---------------------------------------------------------------------------------------


@dataclass
class RunFigures:
    wall_s: float
    status: str
    phases: list[str]  # the audit's phases, in order
    actions: list[tuple[str, str]]  # (name, status)
    with_model_ms: dict[str, float]
    model_ms: dict[str, float]
    activity_ms: float  # all activities
    activity_calls: int
    hypothesize: dict[str, Any]  # the phase row's outputs.model, when the model planned
    planned_by: str | None


def one_run(api: TestClient, platform: Platform, admin: dict[str, str], log: Log) -> RunFigures:
    assert platform.workflows is not None
    # Every loop should face the same problem: Analyze skips, for 7 days, a fix Learn
    # reverted, so the previous loop's reverted actions are aged out of that window first.
    with platform.engines.write.begin() as conn:
        conn.execute(
            schema.autonomy_actions.update()
            .where(schema.autonomy_actions.c.status == "reverted")
            .values(updated_at=utcnow() - timedelta(days=8))
        )
    log.clear()
    started = time.perf_counter()
    r = api.post("/v1/autonomy/runs", json={}, headers=admin)
    if r.status_code != 202:
        raise SystemExit(f"POST /v1/autonomy/runs: {r.status_code} {r.text}")
    body = r.json()
    row = platform.workflows.host.wait_for(body["instance_id"], timeout=600)
    wall = time.perf_counter() - started
    if row.runtime_status != "Completed":
        raise SystemExit(f"run {body['run_id']}: {row.runtime_status}: {row.error}")
    run = api.get(body["status_url"], headers=admin).json()
    with log.lock:
        activities, model = list(log.activities), list(log.model)
    with_model: dict[str, float] = defaultdict(float)
    model_ms: dict[str, float] = defaultdict(float)
    for _, phase, a0, a1 in activities:
        with_model[phase] += (a1 - a0) * 1000
        model_ms[phase] += sum(
            (m1 - m0) * 1000 for _, m0, m1 in model if m0 >= a0 and m1 <= a1
        )  # fmt: skip
    hypo = next((p for p in run["phases"] if p["phase"] == "hypothesize"), None)
    return RunFigures(
        wall_s=wall,
        status=run["status"],
        phases=[p["phase"] for p in run["phases"]],
        actions=[(a["name"], a["status"]) for a in run["actions"]],
        with_model_ms=dict(with_model),
        model_ms=dict(model_ms),
        activity_ms=sum((a1 - a0) * 1000 for _, _, a0, a1 in activities),
        activity_calls=len(activities),
        hypothesize=(hypo or {}).get("outputs", {}).get("model") or {},
        planned_by=(run.get("summary") or {}).get("planned_by"),
    )


# -- the tenant ---------------------------------------------------------------------------------


def seed(api: TestClient, platform: Platform, documents: int) -> tuple[dict[str, str], int, int]:
    """A tenant with ``documents`` stdlib modules ingested and the gap questions searched
    twice each; its admin headers, the chunks and the gaps recorded."""
    _, admin = tenant_service.create_tenant(platform.uow_factory, name="bench")
    headers = {"Authorization": f"Bearer {admin.secret}"}
    tenant_id = platform.tenants.authenticate(admin.secret).tenant_id
    started = []
    for text in list(stdlib_documents().values())[:documents]:
        r = api.post("/v1/ingestions", content=text.encode(),
                     headers={**headers, "Content-Type": "text/markdown"})  # fmt: skip
        assert r.status_code == 202, r.text
        started.append(r.json())
    assert platform.workflows is not None
    for body in started:
        row = platform.workflows.host.wait_for(body["instance_id"], timeout=900)
        assert row.runtime_status == "Completed", row.error
    for _ in range(2):
        for question in GAP_QUESTIONS:
            r = api.post("/v1/search", json={"query": question, "k": 5}, headers=headers)
            assert r.status_code == 200, r.text
    platform.knowledge.get().search.writes.flush()
    with platform.engines.read.connect() as conn:
        count = sa.select(sa.func.count())
        chunks = conn.execute(
            count.select_from(schema.chunks).where(schema.chunks.c.tenant_id == tenant_id)
        ).scalar_one()
        gaps = conn.execute(
            count.select_from(schema.knowledge_gaps).where(
                schema.knowledge_gaps.c.tenant_id == tenant_id
            )
        ).scalar_one()
    return headers, int(chunks), int(gaps)


def put_policy(api: TestClient, headers: dict[str, str], planner: str) -> None:
    body = {
        "planner": planner,
        "budget": {"max_iterations": 1, "credits": 100},
        "actions": {name: {"requires_approval": False} for name in REGISTRY},
    }
    r = api.put("/v1/policy", json=body, headers=headers)
    assert r.status_code == 200, r.text


# -- the report ---------------------------------------------------------------------------------


def pct(values: Sequence[float], q: float) -> float:
    return float(np.percentile(np.array(values), q)) if values else float("nan")


def p50_95(values: Sequence[float]) -> str:
    return f"{pct(values, 50):8.1f} / {pct(values, 95):8.1f}"


def report_overhead(runs: list[RunFigures]) -> dict[str, Any]:
    print(f"1. per-phase time over {len(runs)} loops (deterministic planner, approved by the "
          f"policy), ms p50 / p95")  # fmt: skip
    statuses = Counter(r.status for r in runs)
    actions = Counter(f"{n}:{s}" for r in runs for n, s in r.actions)
    print(f"   runs: {dict(statuses)}; actions: {dict(actions)}")
    print(f"   {'phase':<12} {'n':>3}  {'with model':>19}  {'model':>19}  "
          f"{'without model':>19}")  # fmt: skip
    out: dict[str, Any] = {}
    for phase in PHASES:
        present = [r for r in runs if phase in r.with_model_ms]
        total = [r.with_model_ms[phase] for r in present]
        model = [r.model_ms.get(phase, 0.0) for r in present]
        own = [t - m for t, m in zip(total, model, strict=True)]
        goal = "  (goal p95 <= 50)" if phase != "finish" else ""
        print(f"   {phase:<12} {len(present):>3}  {p50_95(total)}  {p50_95(model)}  "
              f"{p50_95(own)}{goal}")  # fmt: skip
        out[phase] = {"n": len(present), "with_model_p50": pct(total, 50),
                      "with_model_p95": pct(total, 95), "without_model_p50": pct(own, 50),
                      "without_model_p95": pct(own, 95)}  # fmt: skip
    orchestration = [r.wall_s * 1000 - r.activity_ms for r in runs]
    per_call = [(r.wall_s * 1000 - r.activity_ms) / r.activity_calls for r in runs]
    walls = [r.wall_s * 1000 for r in runs]
    print("   orchestration (run wall less its activities: HTTP start, replay, history "
          "commits, dispatch):")  # fmt: skip
    print(
        f"     per run {p50_95(orchestration)}   per activity call {p50_95(per_call)}   "
        f"(activity calls per run: {statistics.median(r.activity_calls for r in runs):.0f})"
    )
    print(f"   whole loop, deterministic planner: {p50_95(walls)}")
    out["orchestration_per_run_p50"] = pct(orchestration, 50)
    out["orchestration_per_call_p50"] = pct(per_call, 50)
    out["loop_wall_p50"] = pct(walls, 50)
    return out


def report_model(runs: list[RunFigures]) -> dict[str, Any]:
    print(f"2. Hypothesize with the model planner (Gemma 3 270M, plan grammar), {len(runs)} "
          f"loops after a warm-up")  # fmt: skip
    planned = Counter(r.planned_by for r in runs)
    hypo_ms = [r.model_ms.get("hypothesize", 0.0) for r in runs]
    reported = [r.hypothesize.get("model_ms", 0.0) for r in runs]
    prompt = [r.hypothesize.get("prompt_tokens", 0) for r in runs]
    completion = [r.hypothesize.get("completion_tokens", 0) for r in runs]
    rate = [c / (ms / 1000) for c, ms in zip(completion, reported, strict=True) if ms]
    print(f"   planned by: {dict(planned)}")
    print(f"   model time per Hypothesize, ms p50 / p95: {p50_95(hypo_ms)} (the engine's own "
          f"figure: {p50_95(reported)})")  # fmt: skip
    print(f"   tokens: prompt median {statistics.median(prompt or [0]):.0f}, completion median "
          f"{statistics.median(completion or [0]):.0f}; completion tokens/s p50 "
          f"{pct(rate, 50):.1f}")  # fmt: skip
    walls = [r.wall_s for r in runs]
    model_all = [sum(r.model_ms.values()) / 1000 for r in runs]
    print(f"3. whole loop on the embedded model (model planner, approved by the policy), s "
          f"p50 / p95: {pct(walls, 50):.2f} / {pct(walls, 95):.2f} (of which model time "
          f"{pct(model_all, 50):.2f} / {pct(model_all, 95):.2f})")  # fmt: skip
    return {"hypothesize_model_ms_p50": pct(hypo_ms, 50), "hypothesize_model_ms_p95":
            pct(hypo_ms, 95), "completion_tokens_median": statistics.median(completion or [0]),
            "tokens_per_s_p50": pct(rate, 50), "loop_wall_s_p50": pct(walls, 50),
            "loop_wall_s_p95": pct(walls, 95)}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=50, help="loops, deterministic planner")
    parser.add_argument("--model-runs", type=int, default=5, help="loops, model planner")
    parser.add_argument("--documents", type=int, default=4, help="stdlib modules ingested")
    args = parser.parse_args()

    log = Log()
    with tempfile.TemporaryDirectory(prefix="hartonomous-autonomy-") as tmp:
        settings = Settings(data_dir=Path(tmp) / "data")
        engine = LlamaEngine(
            ModelFiles(settings.resolved_model_cache_dir),
            EngineOptions(n_ctx=settings.inference_context_tokens,
                          n_threads=settings.inference_threads),
        )  # fmt: skip
        platform = bootstrap(
            settings,
            functions=indexed_app().get_functions(),
            embedder=TimedEmbedder(MiniLMEmbedder(), log),
            inference=TimedInference(engine, log),
        )
        runtime.use(platform)
        time_activities(platform, log)
        try:
            with TestClient(create_app(platform)) as api:
                began = time.perf_counter()
                headers, chunks, gaps = seed(api, platform, args.documents)
                print(f"autonomy benchmarks on {os.cpu_count()} cores (CPU), SQLite, local "
                      f"Durable host; tenant: {args.documents} stdlib modules ({chunks} chunks), "
                      f"{gaps} knowledge-gap searches; seeded in "
                      f"{time.perf_counter() - began:.0f} s")  # fmt: skip
                put_policy(api, headers, "deterministic")
                one_run(api, platform, headers, log)  # warm-up
                runs = [one_run(api, platform, headers, log) for _ in range(args.runs)]
                overhead = report_overhead(runs)
                model: dict[str, Any] = {}
                if args.model_runs:
                    put_policy(api, headers, "model")
                    one_run(api, platform, headers, log)  # warm-up: loads the model
                    model_runs = [
                        one_run(api, platform, headers, log) for _ in range(args.model_runs)
                    ]
                    model = report_model(model_runs)
        finally:
            runtime.use(None)
            platform.close()
    print(json.dumps({"overhead": overhead, "model": model}, default=float))


if __name__ == "__main__":
    main()
