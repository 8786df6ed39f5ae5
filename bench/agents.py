"""Agent factory benchmarks, in process on the embedded platform (SQLite, MiniLM, CPU):

1. Capability search p50/p95 (the service behind ``POST /v1/capabilities/search``: all
   kinds, k=10; the query's embedding included) over a tenant with at least ``--chunks``
   searchable chunks, after a warm-up, over varied queries. Goal: p95 <= 50 ms. Shown apart:
   the query's embedding, one hybrid search given the vector, each kind alone, k=50, and
   the cost of scoring keyword-only hits from their stored embeddings against the
   alternative (a second, vector-mode search).
2. Agent compile time p50/p95: ``AgentService.create`` (resolve the model, read the policy
   and the knowledge snapshot, compile, store the version, point the name), wall time
   around the call, for specs that each make a new version and for a spec compiled again
   (the version exists). Goal: p95 <= 100 ms.
3. A run's overhead outside model time per step (``run_overhead``): agent runs with the
   embedded model on the local Durable host; wall time less model time, per model step.

The corpus: synthetic documents on 24 topics (templated sentences with varied words and
numbers, so no two paragraphs are alike), ingested through ``POST /v1/ingestions`` and the
ingestion workflow on the local Durable host (MiniLM embeds every chunk), and three
synthetic GGUF models through ``POST /v1/models`` (their profiles become model-profile
documents). Built once into ``--cache`` (its data folder; minutes on two cores), then
copied for each run, so a run never changes the cached copy.

    python bench/agents.py [--chunks 10000] [--queries 200] [--compiles 200] [--json out.json]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from fastapi.testclient import TestClient  # noqa: E402

from functions import indexed_app, runtime  # noqa: E402
from hartonomous.agents.capabilities import Kind  # noqa: E402
from hartonomous.agents.spec import AgentSpecIn  # noqa: E402
from hartonomous.api.app import create_app  # noqa: E402
from hartonomous.autonomy.registry import REGISTRY  # noqa: E402
from hartonomous.bootstrap import Platform, bootstrap  # noqa: E402
from hartonomous.domain.tenants import Scope  # noqa: E402
from hartonomous.inference.types import BUILTIN_MODEL  # noqa: E402
from hartonomous.knowledge.chunking import chunk_text  # noqa: E402
from hartonomous.knowledge.embeddings import MINILM, MiniLMEmbedder, minilm_tokenizer  # noqa: E402
from hartonomous.knowledge.search import Mode  # noqa: E402
from hartonomous.models.synthetic import write_synthetic_gguf  # noqa: E402
from hartonomous.services import tenants as tenant_service  # noqa: E402
from hartonomous.settings import Settings  # noqa: E402

CORPUS_VERSION = 1  # bump when the generator changes: the cache key includes it
TOPICS: dict[str, tuple[list[str], list[str], list[str]]] = {
    # topic: (nouns, verbs, adjectives)
    "chess": (["opening", "gambit", "endgame", "pawn structure", "knight", "bishop pair",
               "rook", "castling", "tempo", "zugzwang"],
              ["sacrifices", "controls", "defends", "attacks", "pins", "develops"],
              ["positional", "tactical", "sharp", "closed", "open", "quiet"]),
    "baking": (["sourdough", "dough", "crust", "oven", "yeast", "proofing basket", "flour",
                "crumb", "starter", "loaf"],
               ["kneads", "folds", "proofs", "bakes", "scores", "ferments"],
               ["crisp", "airy", "dense", "golden", "tangy", "elastic"]),
    "astronomy": (["nebula", "exoplanet", "telescope", "red giant", "pulsar", "galaxy",
                   "orbit", "comet", "light curve", "eclipse"],
                  ["observes", "orbits", "emits", "collapses", "transits", "reflects"],
                  ["distant", "faint", "massive", "binary", "dusty", "bright"]),
    "gardening": (["tomato bed", "compost", "mulch", "seedling", "pruning shear",
                   "raised bed", "aphid", "perennial", "irrigation line", "soil"],
                  ["waters", "prunes", "sows", "transplants", "fertilises", "harvests"],
                  ["organic", "shady", "sandy", "drought-tolerant", "fragrant", "hardy"]),
    "finance": (["invoice", "ledger", "bond", "dividend", "cash flow", "balance sheet",
                 "interest rate", "portfolio", "audit", "payment"],
                ["reconciles", "invests", "hedges", "pays", "audits", "forecasts"],
                ["quarterly", "liquid", "overdue", "diversified", "taxable", "fixed"]),
    "networking": (["router", "subnet", "firewall", "packet", "TLS handshake", "DNS record",
                    "load balancer", "VLAN", "latency", "BGP session"],
                   ["routes", "filters", "resolves", "encrypts", "drops", "balances"],
                   ["private", "redundant", "congested", "encrypted", "public", "stale"]),
    "medicine": (["diagnosis", "dosage", "symptom", "vaccine", "clinical trial", "antibody",
                  "blood pressure", "prescription", "triage", "fever"],
                 ["treats", "prescribes", "monitors", "diagnoses", "prevents", "relieves"],
                 ["chronic", "acute", "mild", "viral", "bacterial", "routine"]),
    "law": (["contract", "clause", "liability", "tenant lease", "court ruling", "patent",
             "testimony", "appeal", "statute", "warranty"],
            ["binds", "waives", "enforces", "appeals", "disputes", "grants"],
            ["binding", "void", "contractual", "statutory", "exclusive", "limited"]),
    "music": (["chord progression", "melody", "tempo marking", "string quartet", "scale",
               "harmony", "rhythm section", "cadence", "sonata", "riff"],
              ["modulates", "resolves", "syncopates", "harmonises", "improvises", "tunes"],
              ["minor", "major", "dissonant", "lyrical", "percussive", "baroque"]),
    "cycling": (["derailleur", "cadence", "climb", "peloton", "chain", "saddle height",
                 "time trial", "gear ratio", "tyre pressure", "sprint"],
                ["pedals", "shifts", "climbs", "drafts", "brakes", "accelerates"],
                ["steep", "aerodynamic", "lightweight", "tubeless", "grippy", "fast"]),
    "databases": (["index", "query plan", "transaction", "replica", "schema migration",
                   "deadlock", "primary key", "write-ahead log", "join", "partition"],
                  ["scans", "commits", "locks", "replicates", "vacuums", "joins"],
                  ["relational", "durable", "consistent", "sharded", "clustered", "slow"]),
    "photography": (["aperture", "shutter speed", "lens", "exposure", "tripod", "histogram",
                     "white balance", "sensor", "bokeh", "flash"],
                    ["frames", "exposes", "focuses", "develops", "crops", "captures"],
                    ["wide", "underexposed", "sharp", "grainy", "backlit", "macro"]),
    "sailing": (["mainsail", "jib", "tack", "mooring", "keel", "spinnaker", "tide table",
                 "anchor", "rudder", "knot"],
                ["tacks", "reefs", "anchors", "trims", "heels", "navigates"],
                ["windward", "leeward", "choppy", "calm", "coastal", "offshore"]),
    "geology": (["basalt", "fault line", "sediment", "glacier", "volcano", "fossil",
                 "tectonic plate", "granite", "aquifer", "erosion"],
                ["erodes", "deposits", "erupts", "folds", "fractures", "weathers"],
                ["igneous", "metamorphic", "porous", "ancient", "volcanic", "layered"]),
    "nutrition": (["protein", "fibre", "vitamin", "meal plan", "calorie", "electrolyte",
                   "legume", "whole grain", "iron", "hydration"],
                  ["absorbs", "digests", "balances", "supplements", "fuels", "restores"],
                  ["lean", "plant-based", "fortified", "balanced", "processed", "fresh"]),
    "security": (["phishing email", "password", "access token", "vulnerability", "patch",
                  "intrusion", "audit log", "key rotation", "malware", "certificate"],
                 ["exploits", "revokes", "rotates", "detects", "patches", "isolates"],
                 ["critical", "expired", "suspicious", "privileged", "encrypted", "zero-day"]),
    "logistics": (["shipment", "warehouse", "pallet", "customs form", "route", "container",
                   "delivery window", "forklift", "inventory", "manifest"],
                  ["ships", "stores", "routes", "loads", "tracks", "delays"],
                  ["overnight", "bulk", "refrigerated", "late", "bonded", "express"]),
    "machine learning": (["gradient", "loss curve", "embedding", "dataset", "tokenizer",
                          "learning rate", "overfitting", "checkpoint", "attention head",
                          "benchmark"],
                         ["trains", "fine-tunes", "evaluates", "regularises", "samples",
                          "quantizes"],
                         ["supervised", "sparse", "noisy", "pretrained", "quantized", "large"]),
    "birdwatching": (["warbler", "heron", "binoculars", "migration", "nest", "field guide",
                      "song", "plumage", "wetland", "owl"],
                     ["spots", "migrates", "nests", "calls", "feeds", "roosts"],
                     ["rare", "nocturnal", "migratory", "colourful", "shy", "coastal"]),
    "architecture": (["facade", "load-bearing wall", "arch", "blueprint", "atrium",
                      "cantilever", "column", "roof truss", "floor plan", "courtyard"],
                     ["supports", "spans", "frames", "restores", "designs", "insulates"],
                     ["gothic", "modernist", "brutalist", "timber", "vaulted", "airy"]),
    "coffee": (["espresso", "grinder", "roast", "crema", "pour-over", "bean", "extraction",
                "milk foam", "portafilter", "brew ratio"],
               ["grinds", "brews", "tamps", "roasts", "steams", "extracts"],
               ["bitter", "fruity", "dark", "single-origin", "smooth", "acidic"]),
    "hiking": (["trailhead", "switchback", "summit", "map", "backpack", "water filter",
                "ridge", "campsite", "blister", "compass"],
               ["climbs", "navigates", "camps", "descends", "crosses", "packs"],
               ["rocky", "alpine", "muddy", "marked", "exposed", "remote"]),
    "accounting": (["expense report", "receipt", "tax return", "depreciation", "payroll",
                    "accrual", "journal entry", "budget", "reimbursement", "VAT"],
                   ["records", "files", "accrues", "depreciates", "approves", "books"],
                   ["annual", "deductible", "pending", "monthly", "capital", "net"]),
    "oceanography": (["current", "coral reef", "plankton", "salinity", "trench", "tide",
                      "upwelling", "kelp forest", "buoy", "thermocline"],
                     ["circulates", "bleaches", "measures", "drifts", "warms", "mixes"],
                     ["deep", "tropical", "saline", "cold", "abyssal", "turbulent"]),
}  # fmt: skip
PEOPLE = [
    "Ada",
    "Bruno",
    "Chen",
    "Dana",
    "Emeka",
    "Farah",
    "Goran",
    "Hana",
    "Ivo",
    "Jun",
    "Kofi",
    "Lena",
    "Mateo",
    "Nia",
    "Omar",
    "Priya",
    "Quinn",
    "Rosa",
    "Sven",
    "Tariq",
]
SENTENCES = [
    "{person} {verb} the {adj} {noun} before the {noun2} is ready, which took {n} minutes.",
    "In case {n}, the {adj} {noun} {verb} the {noun2} and {person} wrote it down.",
    "A {adj} {noun} rarely {verb} a {adj2} {noun2}; {person} measured {n} examples.",
    "Why does the {noun} matter? Because a {adj} {noun2} {verb} it about {n} times.",
    "{person} recommends checking the {noun2} whenever the {noun} looks {adj}.",
    "The {adj} {noun} and the {adj2} {noun2} differ by {n} percent in {person}'s notes.",
    "Step {n}: the {noun} {verb} the {noun2}, then {person} checks that it stays {adj}.",
    "Most guides on {topic} say the {noun2} {verb} the {noun} when it is {adj2}.",
]
PARAGRAPHS_PER_DOCUMENT = 40
QUERY_TEMPLATES = [
    "how does the {adj} {noun} work in {topic}",
    "{topic}: what {verb} the {noun}",
    "notes about a {adj} {noun2} and the {noun}",
    "an agent that answers questions about {topic}",
    "{topic} capabilities",
    "who {verb} the {noun2}",
    "tips for a {adj2} {noun}",
]
FIXED_QUERIES = [
    "chess-playing capabilities",
    "search the documents for relevant passages",
    "save a note for later",
    "a small instruction-tuned chat model",
    "which model can write summaries",
    "retry a failed ingestion workflow",
    "cache answers to repeated prompts",
    "read one passage by its id",
]
MODELS = [  # name, description: synthetic GGUF files (random weights), real profiles
    ("Knight Rider", "A chess engine that plays chess and suggests moves"),
    ("Crumb", "A baking assistant for bread recipes and oven timing"),
    ("Ledger Lens", "Reads invoices and reconciles ledgers for accounting teams"),
]


# -- the corpus --------------------------------------------------------------------------------


def paragraph(rng: random.Random, topic: str) -> str:
    nouns, verbs, adjs = TOPICS[topic]
    out = []
    for _ in range(rng.randint(2, 3)):
        noun, noun2 = rng.sample(nouns, 2)
        adj, adj2 = rng.sample(adjs, 2)
        out.append(
            rng.choice(SENTENCES).format(
                person=rng.choice(PEOPLE), verb=rng.choice(verbs), adj=adj, adj2=adj2,
                noun=noun, noun2=noun2, n=rng.randint(2, 9999), topic=topic,
            )
        )  # fmt: skip
    return " ".join(out)


def documents(target_chunks: int, seed: int = 7) -> tuple[list[tuple[str, str, str]], int]:
    """(topic, filename, text) of enough documents for ``target_chunks`` distinct chunks
    (chunked here as ingestion will, with the same tokenizer and policy), and that count."""
    rng = random.Random(seed)
    tokenizer = minilm_tokenizer()
    topics = sorted(TOPICS)
    seen: set[str] = set()
    out: list[tuple[str, str, str]] = []
    while len(seen) < target_chunks:
        topic = topics[len(out) % len(topics)]
        title = f"{topic.title()} notes, part {len(out) // len(topics) + 1}"
        body = [paragraph(rng, topic) for _ in range(PARAGRAPHS_PER_DOCUMENT)]
        text = title + "\n\n" + "\n\n".join(body) + "\n"
        seen |= {c.text for c in chunk_text(text, tokenizer)}
        out.append((topic, f"{topic.replace(' ', '-')}-{len(out):04d}.txt", text))
    return out, len(seen)


def queries(count: int, seed: int = 11) -> list[str]:
    rng = random.Random(seed)
    topics = sorted(TOPICS)
    out = list(FIXED_QUERIES)
    while len(out) < count:
        topic = rng.choice(topics)
        nouns, verbs, adjs = TOPICS[topic]
        noun, noun2 = rng.sample(nouns, 2)
        adj, adj2 = rng.sample(adjs, 2)
        q = rng.choice(QUERY_TEMPLATES).format(
            topic=topic, noun=noun, noun2=noun2, adj=adj, adj2=adj2, verb=rng.choice(verbs)
        )
        if q not in out:
            out.append(q)
    return out[:count]


def build(data: Path, target_chunks: int, embedder: MiniLMEmbedder) -> dict[str, Any]:
    """The tenant, through the API and the real workflows, into ``data``."""
    docs, expected = documents(target_chunks)
    settings = Settings(data_dir=data, max_upload_bytes=16 * 1024 * 1024)
    platform = bootstrap(settings, functions=indexed_app().get_functions(), embedder=embedder)
    runtime.use(platform)
    started = time.perf_counter()
    try:
        tenant, admin = tenant_service.create_tenant(platform.uow_factory, name="bench-agents")
        auth = {"Authorization": f"Bearer {admin.secret}"}
        with TestClient(create_app(platform)) as api:
            assert platform.workflows is not None
            instances = []
            for topic, filename, text in docs:
                meta = json.dumps({"filename": filename, "topic": topic})
                r = api.post("/v1/ingestions", content=text.encode(),
                             headers={**auth, "Content-Type": "text/plain",
                                      "X-Atom-Metadata": meta})  # fmt: skip
                r.raise_for_status()
                instances.append(r.json()["instance_id"])
            with tempfile.TemporaryDirectory() as tmp:
                for i, (name, description) in enumerate(MODELS):
                    path = write_synthetic_gguf(
                        Path(tmp) / f"m{i}.gguf", name=name, seed=i, extra=described(description)
                    )
                    headers = {**auth, "Content-Type": "application/octet-stream"}
                    r = api.post("/v1/models", content=path.read_bytes(), headers=headers)
                    r.raise_for_status()
                    instances.append(r.json()["instance_id"])
            for n, instance_id in enumerate(instances, 1):
                row = platform.workflows.host.wait_for(instance_id, timeout=3600)
                if row.runtime_status != "Completed":
                    raise SystemExit(f"ingestion {instance_id} failed: {row.error}")
                if n % 50 == 0:
                    print(f"  {n}/{len(instances)} ingested, "
                          f"{time.perf_counter() - started:.0f} s", flush=True)  # fmt: skip
    finally:
        runtime.use(None)
        platform.close()
    return {"tenant_id": tenant.id, "documents": len(docs), "chunks_expected": expected,
            "models": len(MODELS), "build_s": round(time.perf_counter() - started, 1)}  # fmt: skip


@contextmanager
def corpus(
    cache: Path, target_chunks: int, embedder: MiniLMEmbedder
) -> Iterator[tuple[Platform, dict[str, Any]]]:
    """A platform over a fresh copy of the cached tenant (built first when not cached)."""
    key = hashlib.sha256(
        f"{CORPUS_VERSION}|{target_chunks}|{MINILM}|{embedder.uses_bfloat16}".encode()
    ).hexdigest()[:12]
    built = cache / f"agents-{target_chunks}-{key}"
    if not (built / "corpus.json").exists():
        print(f"building the corpus into {built} (once; later runs reuse it)", flush=True)
        shutil.rmtree(built, ignore_errors=True)
        info = build(built / "data", target_chunks, embedder)
        (built / "corpus.json").write_text(json.dumps(info))
    info = json.loads((built / "corpus.json").read_text())
    with tempfile.TemporaryDirectory(prefix="hartonomous-agents-") as tmp:
        shutil.copytree(built / "data", Path(tmp) / "data")
        platform = bootstrap(Settings(data_dir=Path(tmp) / "data"), embedder=embedder)
        try:
            yield platform, {**info, "cache": str(built), "data_dir": str(Path(tmp) / "data")}
        finally:
            platform.close()


def described(description: str) -> Callable[[Any], None]:
    """A GGUF writer hook adding ``general.description``."""
    return lambda writer: writer.add_description(description)


# -- measuring ---------------------------------------------------------------------------------


def percentiles(took_s: list[float]) -> dict[str, float]:
    ms = np.array(took_s) * 1000
    return {"p50_ms": round(float(np.percentile(ms, 50)), 2),
            "p95_ms": round(float(np.percentile(ms, 95)), 2), "n": len(took_s)}  # fmt: skip


def timed(calls: list[Callable[[], Any]]) -> dict[str, float]:
    took = []
    for call in calls:
        start = time.perf_counter()
        call()
        took.append(time.perf_counter() - start)
    return percentiles(took)


def bench_search(platform: Platform, tenant_id: str, qs: list[str]) -> dict[str, Any]:
    knowledge = platform.knowledge.get()
    service, search, embedder = platform.capabilities, knowledge.search, knowledge.embedder
    for q in qs[:20]:  # warm up: the tenant's matrix, statements, the tools' embeddings
        service.search(tenant_id, q, 10)
    vectors = {q: embedder.embed([q])[0] for q in qs}

    def capability(q: str, k: int = 10, kinds: list[Kind] | None = None) -> Callable[[], Any]:
        return lambda: service.search(tenant_id, q, k, kinds)

    def hybrid(q: str) -> Callable[[], Any]:
        return lambda: search.search(
            tenant_id=tenant_id, query=q, k=10, mode=Mode.HYBRID, record_gaps=False,
            query_vector=vectors[q],
        )  # fmt: skip

    rows = {
        "capability search, all kinds, k=10": timed([capability(q) for q in qs]),
        "  query embedding alone": timed([partial(embedder.embed, [q]) for q in qs]),
        "  one hybrid search, vector given": timed([hybrid(q) for q in qs]),
        "capability search, knowledge only": timed(
            [capability(q, kinds=[Kind.KNOWLEDGE]) for q in qs]
        ),
        "capability search, models only": timed([capability(q, kinds=[Kind.MODEL]) for q in qs]),
        "capability search, tools only": timed([capability(q, kinds=[Kind.TOOL]) for q in qs]),
        "capability search, all kinds, k=50": timed([capability(q, 50) for q in qs]),
    }
    # Keyword-only hits (no vector score): their stored embeddings, against a second search.
    lookups, second, needing = [], [], 0
    for q in qs:
        hits = search.search(tenant_id=tenant_id, query=q, k=10, mode=Mode.HYBRID,
                             record_gaps=False, query_vector=vectors[q])  # fmt: skip
        missing = [h.atom_id for h in hits if h.vector_score is None]
        if not missing:
            continue
        needing += 1
        start = time.perf_counter()
        with platform.uow_factory(write=False, tenant_id=tenant_id) as uow:
            uow.knowledge.chunk_embeddings(tenant_id, embedder.model_name, missing)
        lookups.append(time.perf_counter() - start)
        start = time.perf_counter()
        knowledge.index.search(tenant_id, vectors[q], 10_000)  # deep enough to reach them
        second.append(time.perf_counter() - start)
    if lookups:
        rows["  keyword-only hits: stored embeddings"] = percentiles(lookups)
        rows["  keyword-only hits: 2nd vector search"] = percentiles(second)
    return {"rows": rows, "queries": len(qs), "queries_with_keyword_only_hits": needing}


def spec(i: int, model_id: str, topic: str) -> AgentSpecIn:
    return AgentSpecIn.model_validate(
        {
            "name": f"bench-agent-{i % 20}",
            "description": f"answers questions about {topic} (variant {i})",
            "model_id": model_id,
            "instructions": f"Answer briefly about {topic} and cite your sources. Variant {i}.",
            "knowledge": {"metadata": {"topic": topic}},
            "tools": [{"name": "search"}, {"name": "read_atom"},
                      {"name": "save_note", "requires_approval": True}],
            "constitution": [
                {"type": "refuse_pattern", "preset": "email"},
                {"type": "refuse_pattern", "preset": "card_number"},
                {"type": "cite_sources", "min_citations": 1},
                {"type": "max_steps", "steps": 4},
                {"type": "max_credits", "credits": 2.0},
            ],
            "budget": {"credits_per_run": 2.0, "max_steps": 6, "max_duration_s": 120},
        }
    )  # fmt: skip


def bench_compile(platform: Platform, tenant_id: str, count: int) -> dict[str, Any]:
    with platform.uow_factory(write=False, tenant_id=tenant_id) as uow:
        models = [m.id for m in uow.models.profiled(tenant_id)]
    model_ids = [BUILTIN_MODEL, *models]
    topics = sorted(TOPICS)
    specs = [spec(i, model_ids[i % len(model_ids)], topics[i % len(topics)])
             for i in range(count + 10)]  # fmt: skip
    for s in specs[:10]:  # warm up
        platform.agents.create(tenant_id, s, "bench")
    fresh, again, reported = [], [], []
    for s in specs[10:]:
        start = time.perf_counter()
        created = platform.agents.create(tenant_id, s, "bench")
        fresh.append(time.perf_counter() - start)
        assert created.created, "each spec differs: each makes a new version"
        reported.append(created.compile_ms / 1000)
    for s in specs[10:]:
        start = time.perf_counter()
        created = platform.agents.create(tenant_id, s, "bench")
        again.append(time.perf_counter() - start)
        assert not created.created
    return {
        "rows": {
            "compile, a new version": percentiles(fresh),
            "  as the service reports it (compile_ms)": percentiles(reported),
            "compile, the version exists": percentiles(again),
        }
    }


# -- 3. run overhead ---------------------------------------------------------------------------
# PLACEHOLDER (the lead adds it): a run's overhead outside model time per step, goal <= 10%
# of the step's model time on the embedded model. Not implemented here: it returns None and
# the table shows "not measured".


RUN_TASKS = [
    "Which chess opening begins with 1.e4 c5?",
    "How does sourdough bread rise?",
    "What is a GGUF model file?",
]


def run_overhead(
    data: Path, embedder: MiniLMEmbedder, tenant_id: str, runs: int, max_tokens: int
) -> dict[str, Any]:
    """Agent runs on the built tenant with the embedded model (llama.cpp, Gemma 3 270M) on
    the local Durable host, through the API. Per run: its wall time (the run row's start to
    its end), its model time (each step's ``generation_ms`` from its receipt: the whole
    inference call) and its model steps; overhead = wall - model, per step, and as a share
    of a step's model time. A first run warms up (loads the model, the index) uncounted.
    Seeds vary by run, so runs take different paths (answer at once, or search first)."""
    platform = bootstrap(
        Settings(data_dir=data), embedder=embedder, functions=indexed_app().get_functions()
    )
    runtime.use(platform)
    rows: list[dict[str, Any]] = []
    try:
        with TestClient(create_app(platform)) as api:
            admin = tenant_service.create_key(
                platform.uow_factory, tenant=tenant_id, scope=Scope.ADMIN
            ).secret
            headers = {"Authorization": f"Bearer {admin}"}
            body = {
                "name": "bench-runner", "model_id": BUILTIN_MODEL,
                "instructions": "First call the search tool with a query, then answer from "
                "the passages, citing them.",
                "tools": [{"name": "search"}],
                "budget": {"credits_per_run": 5.0, "max_steps": 3},
                "max_tokens_per_step": max_tokens,
            }  # fmt: skip
            r = api.post("/v1/agents", json=body, headers=headers)
            assert r.status_code in (200, 201), r.text
            for i in range(-1, runs):  # run -1 warms up (loads llama.cpp): not counted
                task = RUN_TASKS[i % len(RUN_TASKS)]
                r = api.post("/v1/agents/bench-runner/runs", json={"input": task, "seed": i + 1},
                             headers=headers)  # fmt: skip
                assert r.status_code == 202, r.text
                run_id = r.json()["run_id"]
                url = f"/v1/agents/runs/{run_id}"
                while (detail := api.get(url, headers=headers).json())["status"] == "running":
                    time.sleep(0.02)
                wall_ms = (_at(detail["ended_at"]) - _at(detail["started_at"])) * 1000
                model_ms = search_ms = 0.0
                steps = 0
                for step in detail["steps"]:
                    if step["kind"] == "model":
                        receipt = api.get(f"/v1/receipts/{step['receipt_id']}",
                                          headers=headers).json()  # fmt: skip
                        model_ms += receipt["timings_ms"]["generation_ms"]
                        search_ms += receipt["timings_ms"]["search_ms"]
                        steps += 1
                if i < 0:
                    print(f"  warm-up run: {detail['status']}, wall {wall_ms:.0f} ms", flush=True)
                    continue
                tools = sum(s["kind"] == "tool" for s in detail["steps"])
                rows.append({"status": detail["status"], "steps": steps, "wall_ms": wall_ms,
                             "model_ms": model_ms, "retrieval_ms": search_ms,
                             "tools": tools})  # fmt: skip
                print(f"  run {i + 1}/{runs}: {detail['status']}, {steps} steps, wall "
                      f"{wall_ms:.0f} ms, model {model_ms:.0f} ms", flush=True)  # fmt: skip
    finally:
        runtime.use(None)
        platform.close()
    steps = sum(r["steps"] for r in rows)
    overhead = [(r["wall_ms"] - r["model_ms"]) / r["steps"] for r in rows if r["steps"]]
    model = [r["model_ms"] / r["steps"] for r in rows if r["steps"]]
    return {
        "runs": rows,
        "model_steps": steps,
        "max_tokens_per_step": max_tokens,
        "overhead_ms_per_step_p50": round(float(np.percentile(overhead, 50)), 1),
        "overhead_ms_per_step_max": round(max(overhead), 1),
        "model_ms_per_step_p50": round(float(np.percentile(model, 50)), 1),
        "retrieval_ms_per_step_p50": round(
            float(np.percentile([r["retrieval_ms"] / r["steps"] for r in rows if r["steps"]], 50)),
            1,
        ),
        "overhead_share_of_model_time": round(
            (sum(r["wall_ms"] for r in rows) - sum(r["model_ms"] for r in rows))
            / sum(r["model_ms"] for r in rows),
            4,
        ),
    }


def _at(text: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(text).timestamp()


# -- main --------------------------------------------------------------------------------------


def torch_threads() -> int:
    import torch

    return int(torch.get_num_threads())


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown CPU"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chunks", type=int, default=10_000, help="searchable chunks, at least")
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--compiles", type=int, default=200)
    parser.add_argument("--runs", type=int, default=5, help="agent runs with the real model")
    parser.add_argument("--run-max-tokens", type=int, default=96, help="per step of those runs")
    parser.add_argument(
        "--only",
        choices=["search", "compile", "runs"],
        action="append",
        help="run only these sections (default: all)",
    )
    parser.add_argument(
        "--cache", type=Path, default=Path.home() / ".cache" / "hartonomous-bench",
        help="where the built tenant is kept between runs (minutes to build)",
    )  # fmt: skip
    parser.add_argument("--json", type=Path, help="also write the figures here as JSON")
    parser.add_argument(
        "--embed-threads", type=int, default=None,
        help="torch threads for MiniLM (default: torch's, one per core; 1 when other work "
        "shares the cores: torch's parallel regions stall at every barrier then)",
    )  # fmt: skip
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    embedder = MiniLMEmbedder(precision=Settings().embedding_precision, threads=args.embed_threads)
    with corpus(args.cache, args.chunks, embedder) as (platform, info):
        tenant_id = info["tenant_id"]
        chunks = platform.knowledge.get().index.refresh(tenant_id)  # all: a fresh process
        with platform.uow_factory(write=False, tenant_id=tenant_id) as uow:
            snapshot = uow.knowledge.snapshot(tenant_id)
        only = set(args.only or ["search", "compile", "runs"])
        empty: dict[str, Any] = {"rows": {}, "queries": 0, "queries_with_keyword_only_hits": 0}
        search = bench_search(platform, tenant_id, queries(args.queries)) if (
            "search" in only) else empty  # fmt: skip
        compiled = bench_compile(platform, tenant_id, args.compiles) if (
            "compile" in only) else {"rows": {}}  # fmt: skip
        overhead = None
        if "runs" in only:
            platform.close()  # the runs' platform (Durable host, llama.cpp) takes the store
            overhead = run_overhead(Path(info.pop("data_dir")), embedder, tenant_id,
                                    args.runs, args.run_max_tokens)  # fmt: skip
        info.pop("data_dir", None)

    figures = {
        "machine": f"{os.cpu_count()} cores, {cpu_name()}, CPU only",
        "embedding": f"{MINILM}, {'bfloat16' if embedder.uses_bfloat16 else 'float32'}, "
        f"{torch_threads()} torch threads",
        "corpus": {**info, "chunks_indexed": chunks, "snapshot": snapshot},
        "search": search,
        "compile": compiled,
        "run_overhead": overhead,
        "goals": {
            "capability search p95 ms": 50,
            "compile p95 ms": 100,
            "run overhead share of model time": 0.10,
        },
    }
    print(f"agent factory benchmarks on {figures['machine']}; {figures['embedding']}")
    print(f"tenant: {chunks} chunks in {info['documents']} documents, {info['models']} models "
          f"(+ the built-in), {len(REGISTRY)} tools; corpus built in "
          f"{info['build_s']} s, cached at {info['cache']}")  # fmt: skip
    print(f"{'':44} {'p50 ms':>8} {'p95 ms':>8} {'n':>5}")
    for section, goal in ((search, "goal p95 <= 50 ms"), (compiled, "goal p95 <= 100 ms")):
        for n, (name, row) in enumerate(section["rows"].items()):
            note = f"   ({goal})" if n == 0 else ""
            print(f"{name:44} {row['p50_ms']:8.2f} {row['p95_ms']:8.2f} {row['n']:5}{note}")
    print(f"  ({search['queries_with_keyword_only_hits']} of {search['queries']} queries had "
          "keyword-only hits in their top 10)")  # fmt: skip
    if overhead is not None:
        print(f"agent runs (Gemma 3 270M in process, {overhead['max_tokens_per_step']} tokens "
              f"per step at most): {overhead['model_steps']} model steps in "
              f"{len(overhead['runs'])} runs")  # fmt: skip
        print(f"  model time per step p50       {overhead['model_ms_per_step_p50']:10.1f} ms")
        print(f"  overhead per step p50 (max)   {overhead['overhead_ms_per_step_p50']:10.1f} ms "
              f"({overhead['overhead_ms_per_step_max']:.1f})")  # fmt: skip
        print(f"    of which retrieval p50      {overhead['retrieval_ms_per_step_p50']:10.1f} ms")
        print(
            f"  overhead / model time         {overhead['overhead_share_of_model_time']:10.2%}"
            "   (goal <= 10%)"
        )
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))
        print(f"figures written to {args.json}")


if __name__ == "__main__":
    main()
