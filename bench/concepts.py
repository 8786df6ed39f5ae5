"""Concepts: discovery, incremental assignment and binding at scale, and their quality, on the
embedded platform (SQLite), CPU only, side by side in one run:

1. discovery: a whole discovery (read the vectors, cluster, name, match ids, write the
   concept atoms and 100k BELONGS_TO_CONCEPT edges, bind) at ``--chunks`` (100,000) synthetic
   chunks x 384 dimensions, vs the raw ``spherical_kmeans`` call on the same normalised
   matrix; k given (``--k``, 30) and chosen by silhouette. Goal: under 10 s.
2. binding: ``discovery.bind`` at 100k members: the first bind, a second on unchanged data
   (0 added, 0 removed), and one after a single new document.
3. assign: what ingestion pays to give ONE new chunk its concept: ``assign_in`` inside the
   write transaction that indexes it, with its commit; the whole transaction with and without
   it, alternated. Goal: p95 <= 5 ms.
4. quality: the labelled stdlib corpus (``tests/concept_corpus.py``) through the real
   pipeline (MiniLM, the ingest_document workflow): ARI and purity against the families for
   k = families and the chosen k; stability over seeds 0..4 (ARI to seed 0, ids kept); the
   IS_A edges binding finds, judged against ``bench/concepts_isa_labels.json``, on that corpus
   and on a larger one (``--wide``: stdlib packages by pkgutil, labelled by top-level package).
   Goals: ARI >= 0.9 across seeds, >= 95 % of ids kept.

The synthetic corpus (sections 1-3): ``--topics`` topics in ``--groups`` groups (a topic's
centre is its group's centre plus its own direction, so siblings sit close: cosine ~0.6);
a chunk is its topic's centre plus Gaussian noise (cosine ~0.6 to the centre), and 5 % lie
between two sibling topics; its text is drawn from its topic's, its group's and a common
vocabulary (Zipf). Documents of 10 chunks: 7 of their topic, 2 of their group's general
topic (so a specific topic nearly always comes with its general one: IS_A to find), 1 of
any topic. Written straight through the repositories (no embedder; not timed).

    python bench/concepts.py [--only discovery|binding|assign|quality] [--chunks 100000]
        [--k 30] [--samples 300] [--seeds 5] [--wide 400]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform as platform_module
import sys
import tempfile
import time
import warnings
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import sklearn
import sqlalchemy as sa
from sklearn.metrics import adjusted_rand_score

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from functions import indexed_app, runtime  # noqa: E402
from hartonomous.bootstrap import Platform, bootstrap  # noqa: E402
from hartonomous.concepts import clustering  # noqa: E402
from hartonomous.concepts.discovery import Bound, RunRef  # noqa: E402
from hartonomous.domain.atoms import Atom, Modality  # noqa: E402
from hartonomous.knowledge.embeddings import minilm_tokenizer  # noqa: E402
from hartonomous.knowledge.ingestion import INGEST  # noqa: E402
from hartonomous.knowledge.store import HAS_CHUNK  # noqa: E402
from hartonomous.services import tenants as tenant_service  # noqa: E402
from hartonomous.services.clock import new_id, utcnow  # noqa: E402
from hartonomous.settings import Settings  # noqa: E402
from hartonomous.store.schema import edges  # noqa: E402
from tests.concept_corpus import FAMILIES, family_documents, module_document  # noqa: E402

MODEL = "bench-model"
DIMENSION = 384
MODALITY = "text"
LABELS = Path(__file__).with_name("concepts_isa_labels.json")
FIGURES: list[tuple[str, str, str]] = []  # (section, figure, value) for the final table


def figure(section: str, name: str, value: str) -> None:
    FIGURES.append((section, name, value))


def pct(values: Sequence[float], q: float) -> float:
    return float(np.percentile(np.asarray(values, dtype=np.float64), q))


def machine() -> str:
    model = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return (
        f"nproc {usable} ({model}); python {platform_module.python_version()}, "
        f"numpy {np.__version__}, scikit-learn {sklearn.__version__}; load average "
        f"{' '.join(f'{v:.2f}' for v in os.getloadavg())} at start"
    )


class BenchEmbedder:
    """Stands in for the embedder in sections 1-3: discovery only needs its model name (the
    vectors are written straight to the store), and torch is never loaded."""

    model_name, dimension = MODEL, DIMENSION

    @property
    def tokenizer(self) -> Any:
        return minilm_tokenizer()

    def embed(self, texts: Sequence[str], *, spare_core: bool = False) -> np.ndarray:
        raise NotImplementedError("the benchmark writes its vectors itself")


@contextmanager
def synthetic_platform(tmp: Path) -> Iterator[Platform]:
    p = bootstrap(Settings(data_dir=tmp / "synthetic"), embedder=BenchEmbedder())  # type: ignore[arg-type]
    try:
        yield p
    finally:
        p.close()


# -- the synthetic corpus ----------------------------------------------------------------------

CHUNKS_PER_DOCUMENT = 10
TOPIC_WORDS, GROUP_WORDS, COMMON_WORDS = 60, 40, 400
SPREAD = 0.8  # a topic's own direction against its group's: sibling cosine ~ 1 / (1 + 0.64)
NOISE = 1.35  # a chunk's noise norm against its unit centre: cosine to it ~ 0.6
MIXED = 0.05  # share of chunks halfway between their topic and a sibling


def pseudo_words(rng: np.random.Generator, count: int, taken: set[str]) -> list[str]:
    """Pronounceable words no dictionary has (so no stop word), distinct from ``taken``."""
    consonants, vowels = "bdfgklmnprstvz", "aeiou"
    out: list[str] = []
    while len(out) < count:
        syllables = int(rng.integers(2, 5))
        word = "".join(
            consonants[int(rng.integers(len(consonants)))] + vowels[int(rng.integers(5))]
            for _ in range(syllables)
        )
        if word not in taken:
            taken.add(word)
            out.append(word)
    return out


@dataclass
class World:
    """Topics (centres and vocabularies) and how documents draw from them."""

    topics: int
    groups: int
    centres: np.ndarray  # topics x d, unit
    vocab: np.ndarray  # topics x TOPIC_WORDS
    group_vocab: np.ndarray  # groups x GROUP_WORDS
    common: np.ndarray  # COMMON_WORDS
    rng: np.random.Generator
    zipf: dict[int, np.ndarray] = field(default_factory=dict)

    @classmethod
    def make(cls, topics: int, groups: int, seed: int) -> World:
        rng = np.random.default_rng(seed)
        group_centres = clustering.normalized(rng.standard_normal((groups, DIMENSION)))
        own = clustering.normalized(rng.standard_normal((topics, DIMENSION)))
        centres = clustering.normalized(group_centres[np.arange(topics) % groups] + SPREAD * own)
        taken: set[str] = set()
        vocab = np.array([pseudo_words(rng, TOPIC_WORDS, taken) for _ in range(topics)])
        group_vocab = np.array([pseudo_words(rng, GROUP_WORDS, taken) for _ in range(groups)])
        common = np.array(pseudo_words(rng, COMMON_WORDS, taken))
        return cls(topics, groups, centres, vocab, group_vocab, common, rng)

    def group_of(self, topic: int) -> int:
        return topic % self.groups

    def general_of(self, topic: int) -> int:
        """The group's general topic: the first topic of the group."""
        return self.group_of(topic)

    def _p(self, n: int) -> np.ndarray:
        if n not in self.zipf:
            weights = 1.0 / np.arange(1, n + 1)
            self.zipf[n] = weights / weights.sum()
        return self.zipf[n]

    def chunks(self, topic_of: np.ndarray) -> tuple[np.ndarray, list[str]]:
        """Vectors (unit rows) and texts of chunks of these topics."""
        n = len(topic_of)
        rng = self.rng
        noise = rng.standard_normal((n, DIMENSION)).astype(np.float32)
        noise *= NOISE / np.sqrt(DIMENSION)
        base = self.centres[topic_of].copy()
        mixed = np.flatnonzero(rng.random(n) < MIXED)
        if len(mixed):  # halfway to a sibling (same group, another topic)
            step = rng.integers(1, self.topics // self.groups, len(mixed)) * self.groups
            sibling = (topic_of[mixed] + step) % self.topics
            base[mixed] = clustering.normalized(base[mixed] + self.centres[sibling])
        vectors = clustering.normalized(base + noise)
        own = self.vocab[
            topic_of[:, None], rng.choice(TOPIC_WORDS, (n, 24), p=self._p(TOPIC_WORDS))
        ]
        group = self.group_vocab[
            (topic_of % self.groups)[:, None],
            rng.choice(GROUP_WORDS, (n, 8), p=self._p(GROUP_WORDS)),
        ]
        common = self.common[rng.choice(COMMON_WORDS, (n, 24), p=self._p(COMMON_WORDS))]
        words = np.concatenate([own, group, common], axis=1)
        rng.permuted(words, axis=1, out=words)
        return vectors, [" ".join(row) for row in words.tolist()]

    def documents(self, count: int) -> np.ndarray:
        """The topic of each chunk of ``count`` documents (count x CHUNKS_PER_DOCUMENT)."""
        rng = self.rng
        primary = rng.integers(0, self.topics, count)
        out = np.repeat(primary[:, None], CHUNKS_PER_DOCUMENT, axis=1)
        general = primary % self.groups
        per_group = self.topics // self.groups
        is_general = primary < self.groups
        # Two chunks of the general topic; a general document takes two of one sibling.
        sibling = general + rng.integers(1, per_group, count) * self.groups
        out[:, 7] = out[:, 8] = np.where(is_general, sibling, general)
        out[:, 9] = rng.integers(0, self.topics, count)
        return out


@dataclass
class Loaded:
    tenant_id: str
    atom_ids: list[str]
    topic_of: np.ndarray  # per chunk, in atom_ids' order
    matrix: np.ndarray  # unit rows, in atom_ids' order
    documents: list[str]
    setup_s: float


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def write_documents(
    p: Platform, tenant_id: str, topics: np.ndarray, vectors: np.ndarray, texts: list[str],
    assign: bool = False,
) -> tuple[list[str], list[str]]:  # fmt: skip
    """Documents (rows of ``topics``) with their chunks, embeddings and HAS_CHUNK edges in one
    write transaction, as indexing writes them; ``assign``: and their concepts, as ingestion
    does. Returns (document atom ids, chunk atom ids)."""
    now = utcnow()
    doc_atoms, chunk_atoms, chunk_rows, vector_rows, edge_rows = [], [], [], [], []
    salt = new_id()
    for d in range(len(topics)):
        doc = Atom(new_id(), tenant_id, sha(f"doc:{salt}:{d}"), 1000, "text/markdown",
                   Modality.TEXT, now, {"filename": f"doc-{d}.md"})  # fmt: skip
        doc_atoms.append(doc)
        for c in range(topics.shape[1]):
            i = d * topics.shape[1] + c
            text = texts[i]
            digest = sha(f"chunk:{salt}:{i}")
            atom = Atom(new_id(), tenant_id, digest, len(text), "text/plain", Modality.TEXT,
                        now, {"kind": "chunk"})  # fmt: skip
            chunk_atoms.append(atom)
            chunk_rows.append((atom.id, digest, text, len(text.split())))
            vector_rows.append((digest, vectors[i].astype(np.float32).tobytes()))
            edge_rows.append(
                {"tenant_id": tenant_id, "kind": HAS_CHUNK, "src_id": doc.id, "dst_id": atom.id,
                 "ordinal": c, "start_offset": 0, "end_offset": len(text), "created_at": now}
            )  # fmt: skip
    with p.uow_factory(write=True, tenant_id=tenant_id) as uow:
        uow.blobs.acquire_many({a.sha256: a.size for a in [*doc_atoms, *chunk_atoms]}, now)
        uow.atoms.add_many([*doc_atoms, *chunk_atoms])
        uow.knowledge.add_chunks(tenant_id, chunk_rows)
        uow.knowledge.add_embeddings(tenant_id, MODEL, DIMENSION, vector_rows, now)
        if assign:
            p.concept_assigner.assign_in(uow, tenant_id, [a.id for a in chunk_atoms], MODEL)
        uow.knowledge.add_edges(edge_rows)
        for doc in doc_atoms:
            uow.knowledge.record_document(tenant_id, doc.id, MODEL, topics.shape[1], 1000, now)
        uow.commit()
    return [d.id for d in doc_atoms], [a.id for a in chunk_atoms]


def load_synthetic(p: Platform, world: World, chunks: int, name: str) -> Loaded:
    started = time.perf_counter()
    tenant, _ = tenant_service.create_tenant(p.uow_factory, name=name)
    documents = world.documents(max(1, chunks // CHUNKS_PER_DOCUMENT))
    per_batch = 500
    atom_ids: list[str] = []
    doc_ids: list[str] = []
    parts = []
    for start in range(0, len(documents), per_batch):
        topics = documents[start : start + per_batch]
        vectors, texts = world.chunks(topics.ravel())
        docs, ids = write_documents(p, tenant.id, topics, vectors, texts)
        doc_ids += docs
        atom_ids += ids
        parts.append(vectors)
    return Loaded(tenant.id, atom_ids, documents.ravel(), np.concatenate(parts), doc_ids,
                  time.perf_counter() - started)  # fmt: skip


def memberships(p: Platform, tenant_id: str) -> dict[str, str]:
    with p.uow_factory(write=False, tenant_id=tenant_id) as uow:
        return uow.concepts.memberships(tenant_id, MODALITY)


def concept_names(p: Platform, tenant_id: str) -> dict[str, Any]:
    with p.uow_factory(write=False, tenant_id=tenant_id) as uow:
        return {c.id: c for c in uow.concepts.active(tenant_id, MODALITY)}


def majority(member_of: dict[str, str], label_of: dict[str, Any]) -> dict[str, Any]:
    """concept id -> the label most of its members carry."""
    counts: dict[str, Counter[Any]] = {}
    for atom_id, concept_id in member_of.items():
        if atom_id in label_of:
            counts.setdefault(concept_id, Counter())[label_of[atom_id]] += 1
    return {c: n.most_common(1)[0][0] for c, n in counts.items()}


def agreement(member_of: dict[str, str], label_of: dict[str, Any]) -> tuple[float, float, int]:
    """ARI and purity of the concepts against the labels, and how many chunks both cover."""
    keys = sorted(a for a in member_of if a in label_of)
    truth = [label_of[a] for a in keys]
    found = [member_of[a] for a in keys]
    ari = float(adjusted_rand_score(truth, found))
    by_concept: dict[str, Counter[Any]] = {}
    for t, f in zip(truth, found, strict=True):
        by_concept.setdefault(f, Counter())[t] += 1
    purity = sum(c.most_common(1)[0][1] for c in by_concept.values()) / max(1, len(keys))
    return ari, purity, len(keys)


def phases(timings: dict[str, float]) -> str:
    return ", ".join(f"{k} {v:.0f}" for k, v in timings.items())


def discover(p: Platform, tenant_id: str, k: int | None, seed: int = 0) -> dict[str, Any]:
    """A whole discovery in this thread (``run_now``'s steps, each timed)."""
    service = p.concepts
    started = time.perf_counter()
    run = service.prepare(tenant_id, MODALITY, k, "bench", seed)
    ref = RunRef(tenant_id, run.id)
    prepared = time.perf_counter()
    clustered = service.discovery.cluster(ref)
    after_cluster = time.perf_counter()
    bound = service.discovery.bind(ref)
    after_bind = time.perf_counter()
    service.discovery.finish(ref, None)
    done = time.perf_counter()
    return {
        "run_id": run.id,
        "clustered": clustered,
        "bound": bound,
        "total_s": done - started,
        "prepare_s": prepared - started,
        "cluster_s": after_cluster - prepared,
        "bind_s": after_bind - after_cluster,
        "finish_s": done - after_bind,
    }


def print_run(label: str, r: dict[str, Any]) -> None:
    c, b = r["clustered"], r["bound"]
    print(f"  {label}: {r['total_s']:.2f} s in all (prepare {r['prepare_s'] * 1000:.0f} ms, "
          f"cluster activity {r['cluster_s']:.2f} s, bind {r['bind_s']:.2f} s, finish "
          f"{r['finish_s'] * 1000:.0f} ms); k={c.k} ({c.k_chosen_by}), kept {c.kept}, created "
          f"{c.created}, retired {c.retired}", flush=True)  # fmt: skip
    print(f"      cluster phases (ms): {phases(c.timings_ms)}")
    print(f"      bind: {b.windows} windows, {b.is_a} IS_A, {b.related} RELATED, added "
          f"{b.added}, removed {b.removed}", flush=True)  # fmt: skip


# -- 1. discovery ------------------------------------------------------------------------------


def bench_discovery(p: Platform, loaded: Loaded, world: World, k: int) -> None:
    print(f"1. discovery at {len(loaded.atom_ids)} chunks x {DIMENSION} (setup, not timed: "
          f"{loaded.setup_s:.0f} s)", flush=True)  # fmt: skip
    x = clustering.normalized(loaded.matrix)
    first = discover(p, loaded.tenant_id, k)
    print_run(f"first discovery, k={k} given", first)
    started = time.perf_counter()
    raw = clustering.spherical_kmeans(x, k, seed=0)
    raw_s = time.perf_counter() - started
    print(f"  raw spherical_kmeans(k={k}) on the same matrix: {raw_s:.2f} s", flush=True)
    again = discover(p, loaded.tenant_id, k)
    print_run(f"re-discovery, k={k} given (ids matched, members replaced)", again)
    member_of = memberships(p, loaded.tenant_id)
    label_of = dict(zip(loaded.atom_ids, loaded.topic_of.tolist(), strict=True))
    ari, purity, _ = agreement(member_of, label_of)
    # Raw vs stored partition: the same seed, so the same clustering.
    position = {a: i for i, a in enumerate(loaded.atom_ids)}
    stored = [member_of[a] for a in loaded.atom_ids if a in member_of]
    same = adjusted_rand_score(
        [raw.labels[position[a]] for a in loaded.atom_ids if a in member_of], stored
    )
    named_right = 0
    concepts = concept_names(p, loaded.tenant_id)
    topic_of_concept = majority(member_of, label_of)
    for cid, row in concepts.items():
        words = set(world.vocab[topic_of_concept[cid]].tolist())
        named_right += all(term in words for term in row.terms[:3])
    print(f"  partition vs the generating topics: ARI {ari:.3f}, purity {purity:.3f}; stored "
          f"vs raw call ARI {same:.3f}; names from the concept's own topic vocabulary: "
          f"{named_right}/{len(concepts)}", flush=True)  # fmt: skip
    auto = discover(p, loaded.tenant_id, None)
    print_run("automatic k (silhouette)", auto)
    print(f"      silhouette by k: {auto['clustered'].silhouette}")
    started = time.perf_counter()
    k_raw, _ = clustering.choose_k(x, 256, seed=0)
    choose_s = time.perf_counter() - started
    print(f"  raw choose_k on the same matrix: {choose_s:.2f} s (k={k_raw})", flush=True)

    n = f"{len(loaded.atom_ids) // 1000}k"
    goal = "goal < 10 s"
    figure(
        "discovery", f"first discovery {n}, k={k}: whole run", f"{first['total_s']:.2f} s ({goal})"
    )
    figure(
        "discovery",
        "  of which cluster activity / bind",
        f"{first['cluster_s']:.2f} / {first['bind_s']:.2f} s",
    )
    figure("discovery", "  cluster phases (ms)", phases(first["clustered"].timings_ms))
    figure("discovery", f"re-discovery {n}, k={k}: whole run", f"{again['total_s']:.2f} s ({goal})")
    figure("discovery", "  cluster phases (ms)", phases(again["clustered"].timings_ms))
    figure("discovery", f"raw spherical_kmeans k={k}", f"{raw_s:.2f} s")
    figure(
        "discovery", f"automatic k: whole run (k={auto['clustered'].k})", f"{auto['total_s']:.2f} s"
    )
    figure("discovery", "  cluster phases (ms)", phases(auto["clustered"].timings_ms))
    figure("discovery", "raw choose_k", f"{choose_s:.2f} s (k={k_raw})")
    figure("discovery", "ARI / purity vs generating topics", f"{ari:.3f} / {purity:.3f}")
    figure("discovery", "names from own topic's vocabulary", f"{named_right}/{len(concepts)}")


# -- 2. binding --------------------------------------------------------------------------------


def bench_binding(p: Platform, loaded: Loaded, world: World, k: int) -> None:
    print(f"2. binding at {len(loaded.atom_ids)} members (a fresh tenant, k={k})", flush=True)
    tenant = loaded.tenant_id
    service = p.concepts
    run = service.prepare(tenant, MODALITY, k, "bench", 0)
    ref = RunRef(tenant, run.id)
    service.discovery.cluster(ref)

    def timed_bind(ref: RunRef) -> tuple[float, Bound]:
        started = time.perf_counter()
        bound = service.discovery.bind(ref)
        return time.perf_counter() - started, bound

    first_s, first = timed_bind(ref)
    service.discovery.finish(ref, None)
    print(f"  first bind: {first_s:.2f} s; {first.windows} windows, {first.is_a} IS_A, "
          f"{first.related} RELATED, added {first.added}, removed {first.removed}", flush=True)  # fmt: skip
    run = service.prepare(tenant, MODALITY, k, "bench", 0)
    second_s, second = timed_bind(RunRef(tenant, run.id))
    service.discovery.finish(RunRef(tenant, run.id), None)
    print(f"  second bind, unchanged data: {second_s:.2f} s; added {second.added}, removed "
          f"{second.removed}", flush=True)  # fmt: skip
    # One new document, indexed (and its chunks assigned) as ingestion would.
    topics = world.documents(1)
    vectors, texts = world.chunks(topics.ravel())
    write_documents(p, tenant, topics, vectors, texts, assign=True)
    run = service.prepare(tenant, MODALITY, k, "bench", 0)
    third_s, third = timed_bind(RunRef(tenant, run.id))
    service.discovery.finish(RunRef(tenant, run.id), None)
    print(f"  bind after one new document: {third_s:.2f} s; added {third.added}, removed "
          f"{third.removed} (of {third.is_a + third.related} edges)", flush=True)  # fmt: skip
    # IS_A against the generating hierarchy: a specific topic IS_A its group's general one.
    member_of = memberships(p, tenant)
    label_of = dict(zip(loaded.atom_ids, loaded.topic_of.tolist(), strict=True))
    topic = majority(member_of, label_of)
    with p.uow_factory(write=False, tenant_id=tenant) as uow:
        graph = uow.concepts.graph_edges(tenant, ("IS_A",))
    right = sum(
        1 for e in graph
        if topic[e.src_id] >= world.groups and world.general_of(topic[e.src_id]) == topic[e.dst_id]
    )  # fmt: skip
    expected = world.topics - world.groups
    print(f"  IS_A vs the generating hierarchy: {right}/{len(graph)} right, "
          f"{right}/{expected} of the specific->general pairs found", flush=True)  # fmt: skip
    n = f"{len(loaded.atom_ids) // 1000}k"
    figure(
        "binding",
        f"first bind {n} members",
        f"{first_s:.2f} s ({first.is_a} IS_A, {first.related} RELATED)",
    )
    figure(
        "binding",
        "second bind, unchanged: time, added/removed",
        f"{second_s:.2f} s, {second.added}/{second.removed}",
    )
    figure(
        "binding",
        "bind after 1 new document: added/removed",
        f"{third.added}/{third.removed} of {third.is_a + third.related}",
    )
    figure(
        "binding", "synthetic IS_A precision / recall", f"{right}/{len(graph)} / {right}/{expected}"
    )


# -- 3. assign ---------------------------------------------------------------------------------


def bench_assign(p: Platform, loaded: Loaded, world: World, k: int, samples: int) -> None:
    print(f"3. incremental assignment of one chunk, {samples} samples after a discovery at "
          f"{len(loaded.atom_ids)} chunks (k={k})", flush=True)  # fmt: skip
    tenant = loaded.tenant_id
    with p.uow_factory(write=False, tenant_id=tenant) as uow:
        has_concepts = bool(uow.concepts.active(tenant, MODALITY))
    if not has_concepts:
        discover(p, tenant, k)
    member_of = memberships(p, tenant)
    label_of = dict(zip(loaded.atom_ids, loaded.topic_of.tolist(), strict=True))
    concept_of_topic = {t: c for c, t in majority(member_of, label_of).items()}
    topics = world.rng.integers(0, world.topics, samples * 2 + 40)
    vectors, texts = world.chunks(topics)
    assign_ms, with_commit_ms, whole_ms, without_ms = [], [], [], []
    right = placed = 0
    for i in range(len(topics)):
        with_assign = i % 2 == 0
        now = utcnow()
        digest = sha(f"one:{new_id()}")
        text = texts[i]
        atom = Atom(new_id(), tenant, digest, len(text), "text/plain", Modality.TEXT, now,
                    {"kind": "chunk"})  # fmt: skip
        t0 = time.perf_counter()
        with p.uow_factory(write=True, tenant_id=tenant) as uow:
            uow.blobs.acquire_many({digest: len(text)}, now)
            uow.atoms.add_many([atom])
            uow.knowledge.add_chunks(tenant, [(atom.id, digest, text, len(text.split()))])
            uow.knowledge.add_embeddings(tenant, MODEL, DIMENSION,
                                         [(digest, vectors[i].tobytes())], now)  # fmt: skip
            t1 = time.perf_counter()
            got = p.concept_assigner.assign_in(uow, tenant, [atom.id], MODEL) if with_assign else {}
            t2 = time.perf_counter()
            uow.commit()
            t3 = time.perf_counter()
        t4 = time.perf_counter()
        if i < 40:
            continue  # warm-up: statement caches, the centroid cache
        if with_assign:
            assign_ms.append((t2 - t1) * 1000)
            with_commit_ms.append((t3 - t1) * 1000)
            whole_ms.append((t4 - t0) * 1000)
            placed += len(got)
            right += got.get(atom.id) == concept_of_topic.get(int(topics[i]))
        else:
            without_ms.append((t4 - t0) * 1000)

    def line(name: str, ms: list[float], goal: str = "") -> None:
        text = f"p50 {pct(ms, 50):.2f} / p95 {pct(ms, 95):.2f} / max {max(ms):.2f} ms"
        print(f"  {name:<44} {text}{goal}", flush=True)
        figure("assign", name, text + goal)

    line("assign_in", assign_ms)
    line("assign_in + commit", with_commit_ms, "  (goal p95 <= 5 ms)")
    line("whole write transaction, with assign_in", whole_ms)
    line("whole write transaction, without (alternated)", without_ms)
    print(f"  assigned {placed}/{len(assign_ms)}; to the concept of the chunk's topic: "
          f"{right}/{len(assign_ms)} (5 % of chunks lie between two topics)", flush=True)  # fmt: skip
    figure("assign", "assigned to its topic's concept", f"{right}/{len(assign_ms)}")


# -- 4. quality --------------------------------------------------------------------------------


@dataclass
class Ingested:
    tenant_id: str
    label_of: dict[str, str]  # chunk atom id -> its first document's label
    documents: int
    chunks: int
    seconds: float


def ingest(p: Platform, docs: Sequence[tuple[str, str, str]], name: str) -> Ingested:
    """(label, module, markdown) documents through the real pipeline: stored, then the
    ingest_document workflow on the local host (parse, MiniLM, index, assign)."""
    assert p.workflows is not None
    tenant, _ = tenant_service.create_tenant(p.uow_factory, name=name)
    client = p.workflows.client
    started = time.perf_counter()
    instances, label_of_doc, order = [], {}, {}
    for i, (label, module, text) in enumerate(docs):
        stored = p.atoms.store_bytes(
            tenant_id=tenant.id, chunks=[text.encode()], media_type="text/markdown",
            metadata={"filename": f"{module}.md", "family": label},
        )  # fmt: skip
        label_of_doc[stored.atom.id] = label
        order[stored.atom.id] = i
        instances.append(
            client.start_new_sync(
                INGEST, None, {"tenant_id": tenant.id, "document_id": stored.atom.id}
            )
        )
    for instance_id in instances:
        row = p.workflows.host.wait_for(instance_id, timeout=1800)
        if row.runtime_status != "Completed":
            raise SystemExit(f"ingestion failed: {row.error}")
    seconds = time.perf_counter() - started
    with p.engines.read.connect() as conn:
        rows = conn.execute(
            sa.select(edges.c.src_id, edges.c.dst_id).where(
                edges.c.tenant_id == tenant.id, edges.c.kind == HAS_CHUNK
            )
        ).all()
    label_of: dict[str, str] = {}
    first: dict[str, int] = {}
    for doc, chunk in rows:
        if chunk not in first or order[doc] < first[chunk]:  # a shared chunk: the first document's
            first[chunk], label_of[chunk] = order[doc], label_of_doc[doc]
    return Ingested(tenant.id, label_of, len(docs), len(label_of), seconds)


def wide_documents(limit: int) -> list[tuple[str, str, str]]:
    """Standard library modules found by pkgutil, labelled by their top-level package: the
    packages with at least three documented modules, ``limit`` documents at most."""
    import pkgutil
    import sysconfig

    stdlib = sysconfig.get_paths()["stdlib"]
    skip = ("test", "idlelib", "tkinter", "turtledemo", "lib2to3", "ensurepip", "venv", "pydoc_data",
            "this", "antigravity", "__", "site-packages", "distutils")  # fmt: skip
    names: list[str] = []
    for info in pkgutil.walk_packages([stdlib], onerror=lambda _: None):
        if any(info.name.startswith(s) or f".{s}" in info.name for s in skip):
            continue
        if "." in info.name or info.ispkg:
            names.append(info.name)
    by_top: dict[str, list[str]] = {}
    for name in sorted(names):
        by_top.setdefault(name.split(".")[0], []).append(name)
    out: list[tuple[str, str, str]] = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for top, modules in sorted(by_top.items()):
            docs = []
            for module in modules:
                try:
                    text = module_document(module)
                except Exception:  # a module that will not import here
                    continue
                if text is not None:
                    docs.append((top, module, text))
            if len(docs) >= 3:
                out += docs
    return out[:limit]


def isa_edges(p: Platform, tenant_id: str) -> tuple[list[dict[str, Any]], int]:
    """Every IS_A edge among the active concepts, by name, and the RELATED count."""
    names = {cid: row.name for cid, row in concept_names(p, tenant_id).items()}
    with p.uow_factory(write=False, tenant_id=tenant_id) as uow:
        graph = [e for e in uow.concepts.graph_edges(tenant_id, ("IS_A", "RELATED"))
                 if e.src_id in names and e.dst_id in names]  # fmt: skip
    out = []
    for e in graph:
        if e.kind != "IS_A":
            continue
        occurrences = e.evidence.get("occurrences", {})
        out.append({
            "child": names[e.src_id], "parent": names[e.dst_id], "confidence": e.confidence,
            "together": e.evidence.get("together"),
            "child_windows": occurrences.get(e.src_id), "parent_windows": occurrences.get(e.dst_id),
        })  # fmt: skip
    return out, sum(1 for e in graph if e.kind == "RELATED")


def judge(corpus: str, found: list[dict[str, Any]], labels: dict[str, Any]) -> tuple[int, int, int]:
    """Print each IS_A edge with its hand label; (right, labelled, unlabelled)."""
    judged = labels.get(corpus, {})
    right = labelled = 0
    for e in found:
        key = f"{e['child']} IS_A {e['parent']}"
        verdict = judged.get(key)
        mark = "?"
        if verdict is not None:
            labelled += 1
            right += bool(verdict["correct"])
            mark = "right" if verdict["correct"] else "wrong"
        print(f"      [{mark:>5}] {key}  conf {e['confidence']:.3f}, together {e['together']}, "
              f"windows child {e['child_windows']} / parent {e['parent_windows']}"
              + (f"  -- {verdict['reason']}" if verdict else ""))  # fmt: skip
    return right, labelled, len(found) - labelled


def quality_of(p: Platform, data: Ingested, families: int, seeds: int, corpus: str,
               labels: dict[str, Any], stability: bool) -> None:  # fmt: skip
    tenant = data.tenant_id
    partitions: list[dict[str, str]] = []
    for seed in range(seeds if stability else 1):
        run = discover(p, tenant, families, seed)
        c = run["clustered"]
        member_of = memberships(p, tenant)
        ari, purity, n = agreement(member_of, data.label_of)
        line = f"  k={families} seed {seed}: ARI {ari:.3f}, purity {purity:.3f} over {n} chunks"
        if partitions:
            to_zero = adjusted_rand_score(
                [partitions[0][a] for a in sorted(member_of)],
                [member_of[a] for a in sorted(member_of)],
            )
            line += f"; ARI to seed 0 {to_zero:.3f}; ids kept {c.kept}/{c.k} ({100 * c.kept / c.k:.0f} %)"
            figure(
                corpus, f"seed {seed}: ARI to seed 0, ids kept", f"{to_zero:.3f}, {c.kept}/{c.k}"
            )
        else:
            figure(corpus, f"k={families} (families): ARI / purity", f"{ari:.3f} / {purity:.3f}")
        print(line + f"; {run['total_s']:.1f} s", flush=True)
        partitions.append(member_of)
        if seed == 0:
            found, related = isa_edges(p, tenant)
            print(f"    binding (documents as windows): {run['bound'].windows} windows, "
                  f"{len(found)} IS_A, {related} RELATED", flush=True)  # fmt: skip
            right, labelled, unlabelled = judge(f"{corpus} k={families}", found, labels)
            figure(corpus, f"k={families}: IS_A / RELATED edges", f"{len(found)} / {related}")
            figure(corpus, f"k={families}: IS_A precision (labelled), unlabelled",
                   f"{right}/{labelled}, {unlabelled} unlabelled")  # fmt: skip
    for name, row in concept_names(p, tenant).items():
        print(f"    concept {row.size:>5}  {row.name}")
        del name
    auto = discover(p, tenant, None, 0)
    c = auto["clustered"]
    member_of = memberships(p, tenant)
    ari, purity, n = agreement(member_of, data.label_of)
    print(f"  automatic k={c.k} (silhouette {c.silhouette}): ARI {ari:.3f}, purity {purity:.3f}; "
          f"{auto['total_s']:.1f} s", flush=True)  # fmt: skip
    figure(corpus, f"automatic k={c.k}: ARI / purity", f"{ari:.3f} / {purity:.3f}")
    found, related = isa_edges(p, tenant)
    print(f"    binding: {len(found)} IS_A, {related} RELATED", flush=True)
    right, labelled, unlabelled = judge(f"{corpus} auto", found, labels)
    figure(corpus, f"automatic k={c.k}: IS_A / RELATED edges", f"{len(found)} / {related}")
    figure(corpus, f"automatic k={c.k}: IS_A precision (labelled), unlabelled",
           f"{right}/{labelled}, {unlabelled} unlabelled")  # fmt: skip


def bench_quality(tmp: Path, seeds: int, wide: int) -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    labels = json.loads(LABELS.read_text()) if LABELS.exists() else {}
    p = bootstrap(Settings(data_dir=tmp / "quality"), functions=indexed_app().get_functions())
    runtime.use(p)
    p.start_background()
    try:
        docs = family_documents()
        data = ingest(p, docs, "families")
        print(f"4. quality: {data.documents} stdlib modules of {len(FAMILIES)} families, "
              f"{data.chunks} chunks, ingested (MiniLM) in {data.seconds:.0f} s", flush=True)  # fmt: skip
        figure(
            "quality",
            "corpus",
            f"{data.documents} modules, {len(FAMILIES)} families, {data.chunks} chunks",
        )
        quality_of(p, data, len(FAMILIES), seeds, "quality", labels, stability=True)
        if wide:
            docs = wide_documents(wide)
            tops = sorted({d[0] for d in docs})
            data = ingest(p, docs, "wide")
            print(f"4b. wide corpus: {data.documents} stdlib modules of {len(tops)} top-level "
                  f"packages, {data.chunks} chunks, ingested in {data.seconds:.0f} s", flush=True)  # fmt: skip
            figure(
                "wide",
                "corpus",
                f"{data.documents} modules, {len(tops)} packages, {data.chunks} chunks",
            )
            quality_of(p, data, len(tops), seeds, "wide", labels, stability=False)
    finally:
        p.stop_background()
        runtime.use(None)
        p.close()


# -- main --------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", choices=["discovery", "binding", "assign", "quality"])
    parser.add_argument("--chunks", type=int, default=100_000)
    parser.add_argument("--topics", type=int, default=30)
    parser.add_argument("--groups", type=int, default=6)
    parser.add_argument("--k", type=int, default=30)
    parser.add_argument("--samples", type=int, default=300)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument(
        "--wide", type=int, default=400, help="modules of the wide corpus (0: none)"
    )
    args = parser.parse_args()
    print(f"machine: {machine()}", flush=True)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="hartonomous-concepts-") as name:
        tmp = Path(name)
        if args.only in (None, "discovery", "binding", "assign"):
            world = World.make(args.topics, args.groups, seed=7)
            with synthetic_platform(tmp) as p:
                if args.only in (None, "discovery"):
                    loaded = load_synthetic(p, world, args.chunks, "discovery")
                    bench_discovery(p, loaded, world, args.k)
                if args.only in (None, "binding"):
                    loaded = load_synthetic(p, world, args.chunks, "binding")
                    bench_binding(p, loaded, world, args.k)
                    if args.only is None:
                        bench_assign(p, loaded, world, args.k, args.samples)
                if args.only == "assign":
                    loaded = load_synthetic(p, world, args.chunks, "assign")
                    bench_assign(p, loaded, world, args.k, args.samples)
        if args.only in (None, "quality"):
            bench_quality(tmp, args.seeds, args.wide)
    print(f"\nfigures ({time.perf_counter() - started:.0f} s in all); machine: {machine()}")
    print(f"command: python {' '.join(sys.argv)}")
    width = max(len(f) for _, f, _ in FIGURES) if FIGURES else 0
    for section, name, value in FIGURES:
        print(f"  {section:<10} {name:<{width}}  {value}")


if __name__ == "__main__":
    main()
