"""Knowledge benchmarks, side by side in one run (this machine, CPU only):

1. Ingestion: chunks per second end to end (documents stored, ingest_document workflows on
   the local Durable host, MiniLM embeddings, indexing) vs the raw embedding throughput of the
   same model on the same chunks. Goal: at least 0.8 of raw.
2. Search latency p50/p95 at 10k and 100k chunks of real text (distinct lines of the
   standard library's source, embedded by the model, queries held out): in process
   (SearchService; exact, as configured, hybrid, keyword; the query embedding included and
   also shown apart) and over HTTP (a real `hartonomous serve`), vs raw NumPy brute force on
   the same matrix; the ANN index's recall@10 against exact search on these real vectors.
   Goal: p95 <= 20 ms in process at 100k.
3. Retrieval quality: recall@10 of vector, keyword and hybrid search on a labelled set: the
   corpus is the Python standard library's own docstrings (written by others), the queries
   paraphrase 40 of them without naming them.

    python bench/knowledge.py [--sizes 10000 100000] [--queries 200]
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import importlib
import inspect
import json
import os
import random
import re
import statistics
import sys
import sysconfig
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import sqlalchemy as sa

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from _server import serving  # noqa: E402

from functions import indexed_app, runtime  # noqa: E402
from hartonomous.bootstrap import Platform, bootstrap  # noqa: E402
from hartonomous.knowledge.chunking import chunk_text  # noqa: E402
from hartonomous.knowledge.embeddings import MINILM, MiniLMEmbedder  # noqa: E402
from hartonomous.knowledge.ingestion import INGEST  # noqa: E402
from hartonomous.knowledge.search import Mode  # noqa: E402
from hartonomous.knowledge.vectors import VectorIndex  # noqa: E402
from hartonomous.services import tenants as tenant_service  # noqa: E402
from hartonomous.settings import Settings  # noqa: E402
from hartonomous.store.schema import atoms, blobs, chunks, edges, embeddings  # noqa: E402

MODULES = [
    "os",
    "os.path",
    "shutil",
    "json",
    "re",
    "itertools",
    "functools",
    "collections",
    "string",
    "textwrap",
    "datetime",
    "math",
    "statistics",
    "random",
    "subprocess",
    "pathlib",
    "urllib.parse",
    "base64",
    "hashlib",
    "zipfile",
    "tarfile",
    "csv",
    "heapq",
    "bisect",
    "difflib",
    "glob",
    "fnmatch",
    "tempfile",
    "time",
    "calendar",
    "uuid",
    "secrets",
    "socket",
    "threading",
    "queue",
    "logging",
    "argparse",
    "inspect",
    "copy",
    "pprint",
    "operator",
    "struct",
    "zlib",
    "gzip",
    "html",
    "hmac",
    "sqlite3",
    "unicodedata",
    "decimal",
    "fractions",
    "contextlib",
    "enum",
    "dataclasses",
    "shlex",
    "configparser",
]

# (query paraphrasing a docstring, the member it describes)
LABELLED = [
    ("delete a folder and everything inside it", "shutil.rmtree"),
    ("copy a file together with its permission bits", "shutil.copy"),
    ("serialize a Python object to a JSON formatted string", "json.dumps"),
    ("split a pathname into the directory part and the final component", "os.path.split"),
    ("return every non-overlapping match of a pattern in a string", "re.findall"),
    ("substitute occurrences of a pattern by a replacement", "re.sub"),
    ("cartesian product of several input iterables", "itertools.product"),
    ("memoize a function, keeping the most recent calls", "functools.lru_cache"),
    ("break a paragraph into lines no longer than a given width", "textwrap.wrap"),
    ("strip the indentation shared by every line of a text", "textwrap.dedent"),
    ("average of a sample of numbers", "statistics.mean"),
    ("the middle value of numeric data", "statistics.median"),
    ("pick one element at random from a sequence", "random.choice"),
    ("randomly reorder a list in place", "random.shuffle"),
    ("run a program with arguments and wait until it completes", "subprocess.run"),
    ("escape special characters so a string is safe in a URL", "urllib.parse.quote"),
    ("break a URL into scheme, network location, path and query", "urllib.parse.urlparse"),
    ("encode binary data using base64", "base64.b64encode"),
    ("combine already sorted inputs into a single sorted stream", "heapq.merge"),
    ("where to insert an item to keep a list ordered, left of equal ones", "bisect.bisect_left"),
    ("find the best fuzzy matches for a word among candidates", "difflib.get_close_matches"),
    ("list the paths that match a shell wildcard", "glob.glob"),
    ("securely create a unique temporary folder", "tempfile.mkdtemp"),
    ("suspend execution of the calling thread for a while", "time.sleep"),
    ("is this year a leap year", "calendar.isleap"),
    ("the present moment as seconds since the epoch", "time.time"),
    ("produce a random text token that is safe to put in URLs", "secrets.token_urlsafe"),
    ("compare two digests without leaking timing information", "hmac.compare_digest"),
    ("duplicate an object and all the objects it contains", "copy.deepcopy"),
    ("compress bytes with the deflate algorithm", "zlib.compress"),
    ("convert characters like ampersand and angle brackets to HTML-safe sequences", "html.escape"),
    ("tally how many times each hashable item occurs", "collections.Counter"),
    ("a mapping that supplies a default value for absent keys", "collections.defaultdict"),
    ("smallest integer not less than a number", "math.ceil"),
    ("the n biggest elements of a dataset", "heapq.nlargest"),
    ("iterate over several iterables one after another", "itertools.chain"),
    ("group consecutive elements that share a key", "itertools.groupby"),
    ("fold a sequence into one value by applying a two-argument function", "functools.reduce"),
    ("split a string the way a Unix shell would", "shlex.split"),
    ("a context manager that ignores the listed exceptions", "contextlib.suppress"),
]


def stdlib_documents() -> dict[str, str]:
    """One Markdown document per module: a section per public member with a docstring."""
    documents: dict[str, str] = {}
    for name in MODULES:
        module = importlib.import_module(name)
        sections = []
        for member_name in sorted(dir(module)):
            if member_name.startswith("_"):
                continue
            member = getattr(module, member_name)
            doc = inspect.getdoc(member) if callable(member) else None
            if doc and len(doc) > 40 and getattr(member, "__module__", "") not in ("builtins",):
                sections.append(f"## {name}.{member_name}\n\n{doc}")
        if sections:
            documents[name] = f"# {name}\n\n" + "\n\n".join(sections)
    return documents


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.array(values), q))


# -- 1. ingestion ----------------------------------------------------------------------------


def bench_ingestion(platform: Platform, embedder: MiniLMEmbedder, rounds: int) -> dict[str, Any]:
    """Raw embedding and end-to-end ingestion of the same chunks, alternated ``rounds``
    times (each end-to-end round in a fresh tenant, so it embeds everything again): this
    VM's speed drifts by tens of percent over minutes, and alternating pairs each e2e run
    with a raw run taken moments before it."""
    documents = stdlib_documents()
    all_chunks = [
        c.text for text in documents.values() for c in chunk_text(text, embedder.tokenizer)
    ]
    unique = list(dict.fromkeys(all_chunks))
    embedder.embed(unique[:64])  # warm up
    assert platform.workflows is not None
    client = platform.workflows.client
    # And the pipeline, as a running server would be: the first ingestion of a process
    # pays imports, statement compilation and the parse cache (0.05-0.08 off round 1).
    warm, _ = tenant_service.create_tenant(
        platform.uow_factory, name=f"warm-{uuid.uuid4().hex[:8]}"
    )
    for i in range(3):  # not the measured text: its keyword statistics stay as they were
        text = f"# Warm-up {i}\n\n" + " ".join(f"w{i}x{j}" for j in range(300))
        stored = platform.atoms.store_bytes(
            tenant_id=warm.id, chunks=[text.encode()], media_type="text/markdown",
            metadata={"filename": f"warm-{i}.md"},
        )  # fmt: skip
        platform.workflows.host.wait_for(
            client.start_new_sync(
                INGEST, None, {"tenant_id": warm.id, "document_id": stored.atom.id}
            ),
            timeout=600,
        )
    pairs = []
    tenants = []
    for _ in range(rounds):
        start = time.perf_counter()
        embedder.embed(unique)
        raw_seconds = time.perf_counter() - start

        name = f"stdlib-{uuid.uuid4().hex[:8]}"
        tenant, _ = tenant_service.create_tenant(platform.uow_factory, name=name)
        tenants.append(tenant.id)
        start = time.perf_counter()
        instances = []
        for name, text in documents.items():
            stored = platform.atoms.store_bytes(
                tenant_id=tenant.id,
                chunks=[text.encode()],
                media_type="text/markdown",
                metadata={"filename": f"{name}.md"},
            )
            instances.append(
                client.start_new_sync(
                    INGEST, None, {"tenant_id": tenant.id, "document_id": stored.atom.id}
                )
            )
        for instance_id in instances:
            row = platform.workflows.host.wait_for(instance_id, timeout=1800)
            if row.runtime_status != "Completed":
                raise SystemExit(f"ingestion failed: {row.error}")
        e2e_seconds = time.perf_counter() - start
        pairs.append((raw_seconds, e2e_seconds))
    ratios = [raw / e2e for raw, e2e in pairs]
    return {
        "documents": len(documents),
        "chunks": len(unique),
        "rounds": [{"raw_s": raw, "e2e_s": e2e} for raw, e2e in pairs],
        "raw_per_s": len(unique) / statistics.median(raw for raw, _ in pairs),
        "e2e_per_s": len(unique) / statistics.median(e2e for _, e2e in pairs),
        "ratio_median": statistics.median(ratios),
        "ratio_min": min(ratios),
        "tenant_id": tenants[0],
    }


# -- 3. recall ---------------------------------------------------------------------------------


def bench_recall(platform: Platform, tenant_id: str) -> dict[str, Any]:
    search = platform.knowledge.get().search
    recall: dict[str, list[int]] = {m.value: [] for m in Mode}
    missing = []
    for query, target in LABELLED:
        with platform.engines.read.connect() as conn:
            title = f"## {target}\n"
            relevant = set(
                conn.execute(
                    sa.select(chunks.c.atom_id).where(
                        chunks.c.tenant_id == tenant_id, chunks.c.text.contains(title)
                    )
                ).scalars()
            )
        if not relevant:
            missing.append(target)
            continue
        for mode in Mode:
            hits = search.search(tenant_id=tenant_id, query=query, k=10, mode=mode)
            recall[mode.value].append(int(any(h.atom_id in relevant for h in hits)))
    return {
        "queries": len(LABELLED) - len(missing),
        "missing": missing,
        **{m: sum(v) / len(v) for m, v in recall.items() if v},
    }


# -- 2. latency --------------------------------------------------------------------------------

SENTENCE = re.compile(r"^[A-Z][a-z]+ [a-z][\w ,'()-]+[a-z.]$")


def stdlib_lines(size: int, queries: int) -> tuple[list[str], list[str]]:
    """A corpus of distinct lines of the standard library's own source (code, comments,
    docstrings: real text written by others), and queries: natural-language comment and
    docstring lines held out of the corpus. Shuffled with a fixed seed."""
    root = Path(sysconfig.get_paths()["stdlib"])
    lines: dict[str, None] = {}
    for path in sorted(root.rglob("*.py")):
        if "site-packages" in path.parts:
            continue
        try:
            source = path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue
        for line in source.splitlines():
            text = line.strip()
            if len(text) >= 25:
                lines[text] = None
    everything = list(lines)
    random.Random(7).shuffle(everything)
    prose = [line.strip("#\"' ") for line in everything]
    held_out = [i for i, text in enumerate(prose) if SENTENCE.match(text)][:queries]
    taken = set(held_out)
    corpus = [line for i, line in enumerate(everything) if i not in taken][:size]
    if len(corpus) < size:
        raise SystemExit(f"the standard library has only {len(corpus)} distinct lines here")
    return corpus, [prose[i] for i in held_out]


def embed_cached(
    embedder: MiniLMEmbedder, texts: list[str], cache: Path
) -> tuple[np.ndarray, float]:
    """The texts' vectors, from ``cache`` when this exact corpus was embedded before with
    the same model and precision; returns them and the seconds embedding took (0: cached)."""
    key = hashlib.sha256("\n".join([MINILM, str(embedder.uses_bfloat16), *texts]).encode())
    path = cache / f"lines-{len(texts)}-{key.hexdigest()[:16]}.npy"
    if path.exists():
        return np.load(path), 0.0
    start = time.perf_counter()
    matrix = embedder.embed(texts)
    took = time.perf_counter() - start
    cache.mkdir(parents=True, exist_ok=True)
    np.save(path, matrix)
    return matrix, took


def load_chunks(platform: Platform, tenant_id: str, texts: list[str], matrix: np.ndarray) -> None:
    """Chunk atoms with their embeddings, linked to one document, written straight to the
    store: the rows an ingestion would write, without spending minutes re-embedding."""
    now = datetime.now(UTC)
    doc_id = str(uuid.uuid4())
    rows_blobs, rows_atoms, rows_chunks, rows_emb, rows_edges, rows_fts = [], [], [], [], [], []
    doc_sha = hashlib.sha256(doc_id.encode()).hexdigest()
    rows_blobs.append({"sha256": doc_sha, "size": 1, "refcount": 1, "created_at": now})
    rows_atoms.append(
        {"id": doc_id, "tenant_id": tenant_id, "sha256": doc_sha, "size": 1,
         "media_type": "text/plain", "modality": "text", "metadata": {}, "created_at": now}
    )  # fmt: skip
    for i, text in enumerate(texts):
        sha = hashlib.sha256(f"{tenant_id}:{text}".encode()).hexdigest()
        atom_id = str(uuid.uuid4())
        rows_blobs.append({"sha256": sha, "size": len(text), "refcount": 1, "created_at": now})
        rows_atoms.append(
            {"id": atom_id, "tenant_id": tenant_id, "sha256": sha, "size": len(text),
             "media_type": "text/plain", "modality": "text", "metadata": {}, "created_at": now}
        )  # fmt: skip
        rows_chunks.append(
            {"atom_id": atom_id, "tenant_id": tenant_id, "sha256": sha, "text": text,
             "token_count": 0}
        )  # fmt: skip
        rows_emb.append(
            {"tenant_id": tenant_id, "sha256": sha, "model": MINILM, "dimension": matrix.shape[1],
             "vector": matrix[i].tobytes(), "created_at": now}
        )  # fmt: skip
        rows_edges.append(
            {"tenant_id": tenant_id, "kind": "HAS_CHUNK", "src_id": doc_id, "dst_id": atom_id,
             "ordinal": i, "start_offset": 0, "end_offset": len(text), "created_at": now}
        )  # fmt: skip
        rows_fts.append((text, atom_id, tenant_id))
    with platform.engines.write.begin() as conn:
        for table, rows in (
            (blobs, rows_blobs),
            (atoms, rows_atoms),
            (chunks, rows_chunks),
            (embeddings, rows_emb),
            (edges, rows_edges),
        ):
            conn.execute(table.insert(), rows)
        conn.exec_driver_sql(
            "INSERT INTO chunks_fts (text, atom_id, tenant_id) VALUES (?, ?, ?)", rows_fts
        )


def timed(calls: list[Any]) -> tuple[float, float]:
    """p50 and p95 in ms of each zero-argument call."""
    took = []
    for call in calls:
        start = time.perf_counter()
        call()
        took.append(time.perf_counter() - start)
    return percentile(took, 50) * 1000, percentile(took, 95) * 1000


def bench_latency(
    platform: Platform, tenant_id: str, matrix: np.ndarray, queries: list[str]
) -> tuple[dict[str, tuple[float, float]], dict[str, float]]:
    knowledge = platform.knowledge.get()
    embedder, index = knowledge.embedder, knowledge.index
    assert isinstance(index, VectorIndex), "the embedded store searches vectors in memory"
    dimension = matrix.shape[1]
    exact = VectorIndex(platform.uow_factory, MINILM, dimension, ann_threshold=None)
    ann = VectorIndex(platform.uow_factory, MINILM, dimension, ann_threshold=1)
    exact.refresh(tenant_id)
    start = time.perf_counter()
    ann.refresh(tenant_id)
    ann.wait_for_ann(tenant_id)
    ann_build = time.perf_counter() - start
    index.refresh(tenant_id)
    if index.ann_threshold is not None and len(matrix) >= index.ann_threshold:
        index.wait_for_ann(tenant_id)  # the platform's own index, as configured
    exact_search = dataclasses.replace(knowledge.search, index=exact)
    vectors = embedder.embed(queries)
    hits = 0
    for qv in vectors:
        truth = {a for a, _ in exact.search(tenant_id, qv, 10)}
        hits += len(truth & {a for a, _ in ann.search(tenant_id, qv, 10)})

    def raw(qv: np.ndarray) -> None:
        scores = matrix @ qv
        top = np.argpartition(-scores, 9)[:10]
        top[np.argsort(-scores[top])]

    def run(mode: Mode, service: Any = knowledge.search) -> list[Any]:
        return [
            lambda q=q: service.search(tenant_id=tenant_id, query=q, k=10, mode=mode)
            for q in queries
        ]

    for q in queries[:20]:  # warm up
        knowledge.search.search(tenant_id=tenant_id, query=q, k=10, mode=Mode.HYBRID)
    ann_used = index.wait_for_ann(tenant_id, timeout=0)
    rows = {
        "raw numpy (f32)": timed([lambda v=v: raw(v) for v in vectors]),
        "query embedding": timed([lambda q=q: embedder.embed([q]) for q in queries]),
        "exact index search": timed([lambda v=v: exact.search(tenant_id, v, 18) for v in vectors]),
        "ANN index search": timed([lambda v=v: ann.search(tenant_id, v, 18) for v in vectors]),
        "search, exact": timed(run(Mode.VECTOR, exact_search)),
        f"search{' (ANN)' if ann_used else ''}": timed(run(Mode.VECTOR)),
        "search, hybrid": timed(run(Mode.HYBRID)),
        "search, keyword": timed(run(Mode.KEYWORD)),
    }
    stats = {"ann_recall_at_10": hits / (10 * len(vectors)), "ann_build_s": ann_build}
    return rows, stats


def bench_http(url: str, key: str, queries: list[str], settle_s: float) -> dict[str, Any]:
    """The same searches through a real server (its own process) on loopback."""
    auth = {"Authorization": f"Bearer {key}"}
    with httpx.Client(base_url=url, headers=auth, timeout=120) as client:
        # Warm up: the server loads the model and the tenant's matrix, and builds its ANN
        # index in the background when the tenant is past the threshold.
        client.post("/v1/search", json={"query": queries[0]}).raise_for_status()
        time.sleep(settle_s)
        for q in queries[:20]:
            client.post("/v1/search", json={"query": q}).raise_for_status()

        def post(query: str, mode: str) -> None:
            client.post("/v1/search", json={"query": query, "mode": mode}).raise_for_status()

        return {
            f"HTTP {mode}": timed([lambda q=q, m=mode: post(q, m) for q in queries])
            for mode in ("vector", "hybrid")
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="*", default=[10_000, 100_000])
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument(
        "--rounds", type=int, default=3, help="raw / end-to-end ingestion pairs, alternated"
    )
    parser.add_argument(
        "--cache",
        type=Path,
        default=Path.home() / ".cache" / "hartonomous-bench",
        help="where the corpus's embeddings are kept between runs (minutes to compute)",
    )
    parser.add_argument("--skip", nargs="*", default=[], choices=["ingestion", "latency", "http"])
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    ingestion: dict[str, Any] = {}
    recall: dict[str, Any] = {}
    latency: dict[int, dict[str, tuple[float, float]]] = {}
    ann: dict[int, dict[str, float]] = {}
    corpus_s = 0.0
    with tempfile.TemporaryDirectory(prefix="hartonomous-kb-") as tmp:
        settings = Settings(data_dir=Path(tmp) / "data")  # the defaults, as a user gets them
        embedder = MiniLMEmbedder(precision=settings.embedding_precision)
        platform = bootstrap(settings, functions=indexed_app().get_functions(), embedder=embedder)
        runtime.use(platform)
        platform.start_background()
        if "ingestion" not in args.skip:
            ingestion = bench_ingestion(platform, embedder, args.rounds)
            recall = bench_recall(platform, ingestion["tenant_id"])
        platform.stop_background()  # the servers below run their own host on this store

        if "latency" not in args.skip and args.sizes:
            corpus, queries = stdlib_lines(max(args.sizes), args.queries)
            matrix, corpus_s = embed_cached(embedder, corpus, args.cache)
            for size in args.sizes:
                tenant, issued = tenant_service.create_tenant(
                    platform.uow_factory, name=f"lines-{size}"
                )
                load_chunks(platform, tenant.id, corpus[:size], matrix[:size])
                latency[size], ann[size] = bench_latency(
                    platform, tenant.id, matrix[:size], queries
                )
                if "http" not in args.skip:
                    settle = 1.5 * ann[size]["ann_build_s"] + 2
                    latency[size] |= serve_and_search(settings, issued.secret, queries, settle)
        runtime.use(None)
        platform.close()

    print(f"knowledge benchmarks on {os.cpu_count()} cores (CPU), all-MiniLM-L6-v2, "
          f"{'bfloat16' if embedder.uses_bfloat16 else 'float32'}")  # fmt: skip
    if ingestion:
        print(
            "1. ingestion of the standard library's docstrings "
            f"({ingestion['documents']} documents, {ingestion['chunks']} chunks)"
        )
        for i, r in enumerate(ingestion["rounds"], 1):
            n = ingestion["chunks"]
            print(f"   round {i}: raw {n / r['raw_s']:6.1f} chunks/s ({r['raw_s']:.1f} s), "
                  f"end to end {n / r['e2e_s']:6.1f} chunks/s ({r['e2e_s']:.1f} s), "
                  f"ratio {r['raw_s'] / r['e2e_s']:.2f}")  # fmt: skip
        print(f"   median: raw {ingestion['raw_per_s']:.1f}, end to end "
              f"{ingestion['e2e_per_s']:.1f} chunks/s; ratio median "
              f"{ingestion['ratio_median']:.2f}, worst {ingestion['ratio_min']:.2f}"
              "   (goal >= 0.8)")  # fmt: skip
    if latency:
        took = f"{corpus_s:.0f} s" if corpus_s else "(cached)"
        print(f"2. search latency over distinct lines of the standard library's source, "
              f"{args.queries} held-out queries, k=10 (p50 / p95 ms); embedding the "
              f"{max(args.sizes)} lines took {took}")  # fmt: skip
        for size, rows in latency.items():
            print(f"   {size:>7} chunks")
            for name, (p50, p95) in rows.items():
                goal = "   (goal p95 <= 20 ms at 100k)" if name.startswith("search") and \
                    size >= 100_000 and "keyword" not in name else ""  # fmt: skip
                print(f"     {name:<22} {p50:7.2f} / {p95:7.2f}{goal}")
            print(f"     ANN recall@10 vs exact {ann[size]['ann_recall_at_10']:.3f}, "
                  f"built in {ann[size]['ann_build_s']:.1f} s")  # fmt: skip
    if recall:
        print(f"3. recall@10 on {recall['queries']} paraphrased queries over stdlib docstrings")
        for mode in ("vector", "keyword", "hybrid"):
            print(f"   {mode:<8} {recall[mode]:.3f}")
        if recall["missing"]:
            print(f"   (targets without a docstring here: {', '.join(recall['missing'])})")
    print(json.dumps({"ingestion": ingestion, "recall": recall,
                      "latency": {str(k): v for k, v in latency.items()},
                      "ann": {str(k): v for k, v in ann.items()}}))  # fmt: skip


def serve_and_search(
    settings: Settings, key: str, queries: list[str], settle_s: float
) -> dict[str, Any]:
    with serving(settings.data_dir) as (url, _):
        return bench_http(url, key, queries, settle_s)


if __name__ == "__main__":
    main()
