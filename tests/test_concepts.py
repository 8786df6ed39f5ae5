"""Concepts: discovery end to end on real text (the stdlib's docstrings, MiniLM, the local
Durable host), stable ids across runs, incremental assignment, binding, and bad input."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pytest
import sqlalchemy as sa
from concept_corpus import family_documents
from fastapi.testclient import TestClient
from knowledge_corpus import DIMENSION, MODEL, Corpus, add_document
from sklearn.metrics import adjusted_rand_score
from workflow_polling import finish

from hartonomous.api.app import create_app
from hartonomous.autonomy.actions.base import ActionContext
from hartonomous.autonomy.analyze import Analyzer
from hartonomous.autonomy.planner import deterministic
from hartonomous.autonomy.types import ProblemKind
from hartonomous.bootstrap import Platform, autonomy_executors, bootstrap
from hartonomous.concepts import binding, clustering, grouping, identity, naming
from hartonomous.concepts.discovery import RunRef
from hartonomous.errors import Conflict, PaymentRequired, UnprocessableContent
from hartonomous.knowledge.embeddings import MINILM
from hartonomous.knowledge.store import BELONGS_TO_CONCEPT, HAS_CHUNK
from hartonomous.services import tenants as tenant_service
from hartonomous.services.clock import utcnow
from hartonomous.settings import Settings
from hartonomous.store.schema import concept_runs, edges

FAMILIES = ["email", "asyncio", "xml"]


# -- the algorithms, alone ----------------------------------------------------------------------


def planted(k: int, per: int, dim: int = 32, noise: float = 0.3, seed: int = 7) -> tuple:
    rng = np.random.default_rng(seed)
    centres = clustering.normalized(rng.normal(size=(k, dim)))
    labels = np.repeat(np.arange(k), per)
    x = centres[labels] + rng.normal(scale=noise / np.sqrt(dim), size=(k * per, dim))
    return clustering.normalized(x), labels


def test_spherical_kmeans_recovers_planted_clusters_alike_for_every_seed() -> None:
    x, truth = planted(6, 80)
    runs = [clustering.spherical_kmeans(x, 6, seed=s) for s in range(5)]
    for run in runs:
        assert adjusted_rand_score(truth, run.labels) == 1.0
        assert np.allclose(np.linalg.norm(run.centroids, axis=1), 1.0, atol=1e-5)
        sizes = np.bincount(run.labels)
        assert list(sizes) == sorted(sizes, reverse=True)  # numbered by size
    with pytest.raises(ValueError, match="k=0"):
        clustering.spherical_kmeans(x, 0)


def test_the_silhouette_picks_the_planted_k() -> None:
    x, _ = planted(5, 60, noise=0.2)
    k, scores = clustering.choose_k(x, 64)
    assert k == 5, scores
    assert max(scores.values()) == scores[5]


def test_c_tf_idf_names_a_class_by_what_sets_it_apart() -> None:
    terms = naming.top_terms(
        [["the parser reads email headers", "email message headers and their charset"],
         ["the event loop runs coroutines", "tasks and the event loop"],
         ["of the and", "1234 5678"]]
    )  # fmt: skip
    assert terms[0][:2] == ["email", "headers"]
    assert terms[1][:2] == ["event", "loop"]
    assert terms[2] == []
    assert naming.name_of(terms[0], "x") == "email, headers, " + terms[0][2]
    assert naming.name_of([], "concept 3") == "concept 3"


def test_matching_keeps_ids_and_records_splits_and_merges() -> None:
    e = np.eye(4, dtype=np.float32)
    old_ids = ["A", "B", "C"]
    old_members = {f"a{i}": "A" for i in range(10)} | {f"b{i}": "B" for i in range(10)}
    old_members |= {f"c{i}": "C" for i in range(10)}
    # A stays; B splits in two (one half keeps B's id, the other is new); C merges into A.
    new_members = {f"a{i}": 0 for i in range(10)} | {f"c{i}": 0 for i in range(10)}
    new_members |= {f"b{i}": 1 for i in range(5)} | {f"b{i}": 2 for i in range(5, 10)}
    new_centroids = clustering.normalized(np.stack([e[0] + 0.1 * e[2], e[1], e[3] + e[1] * 0.2]))
    fresh = iter(["N1", "N2"])
    got = identity.match(old_ids, e[:3], new_centroids, old_members, new_members,
                         lambda: next(fresh))  # fmt: skip
    assert got.ids == ["A", "B", "N1"]
    assert got.kept == {"A", "B"} and got.retired == ["C"]
    kinds = {(x.src_id, x.kind, x.dst_id) for x in got.lineage}
    assert kinds == {("N1", identity.SPLIT_FROM, "B"), ("C", identity.MERGED_INTO, "A")}


def unit_centroids(**angles: float) -> dict[str, np.ndarray]:
    """Concepts on the unit circle at the given angles (degrees): the cosine of two is the
    cosine of the angle between them."""
    return {
        name: np.array([np.cos(np.radians(a)), np.sin(np.radians(a))], dtype=np.float32)
        for name, a in angles.items()
    }


def test_a_concept_is_a_its_group_when_the_group_subsumes_it() -> None:
    """``finance`` groups ``ledger``, ``narrow`` and ``rare``: it holds every window they are
    in; ``narrow`` is a part of it (IS_A), ``ledger`` is in all of it (no IS_A: the group is
    no broader than it), ``rare`` is seen too seldom. ``sea`` is in most windows: no parent."""
    w = binding.Window
    windows = (
        [w("document", frozenset({"ledger", "narrow"}))] * 4
        + [w("document", frozenset({"ledger"}))] * 6
        + [w("receipt", frozenset({"ledger", "rare"}))] * 2  # under the minimum support
        + [w("document", frozenset({"left", "right"}))] * 3  # siblings, always together
        + [w("document", frozenset({"left"}))] * 40  # sea: in 43 of 55 windows
    )
    broader = {"ledger": "finance", "narrow": "finance", "rare": "finance", "left": "sea",
               "right": "sea"}  # fmt: skip
    centroids = unit_centroids(finance=0, ledger=5, narrow=30, rare=10, sea=90, left=85,
                               right=100)  # fmt: skip
    got = {(b.src_id, b.kind, b.dst_id): b for b in binding.bind(windows, centroids, broader)}
    is_a = got[("narrow", "IS_A", "finance")]
    assert is_a.confidence == 1.0
    assert is_a.evidence["together"] == 4 and is_a.evidence["windows"]["document"] == 4
    assert is_a.evidence["occurrences"] == {"finance": 12, "narrow": 4}
    assert is_a.evidence["centroid_cosine"] == round(np.cos(np.radians(30)), 4)
    assert [key for key in got if key[1] == "IS_A"] == [("narrow", "IS_A", "finance")]
    # One level's pairs are RELATED by the Ochiai coefficient, the levels are never RELATED.
    assert got[("left", "RELATED", "right")].confidence == round(3 / np.sqrt(43 * 3), 6)
    assert got[("ledger", "RELATED", "narrow")].confidence == round(4 / np.sqrt(12 * 4), 6)
    assert not any("rare" in key for key in got)
    assert not any(k[1] == "RELATED" and {"finance", "sea"} & {k[0], k[2]} for k in got)
    assert binding.bind(windows, centroids, broader) == list(got.values())  # reproducible
    # Without groups no concept is a parent: subsumption over one level says where a concept
    # is found, not what it is about.
    assert not [b for b in binding.bind(windows, centroids) if b.kind == "IS_A"]
    # A group everywhere is nobody's parent: the lift refuses it.
    crowded = [x for x in windows if x.concepts != frozenset({"left"})]
    crowded += [w("document", frozenset({"ledger"}))] * 40
    assert not [b for b in binding.bind(crowded, centroids, broader) if b.kind == "IS_A"]


def test_a_concept_found_inside_two_groups_gets_the_nearer_one_as_its_parent() -> None:
    """``narrow`` (grouped with ``general``) is always found beside ``boilerplate`` too, so
    both groups subsume it; the parent is the group it is nearer in meaning."""
    w = binding.Window
    windows = (
        [w("document", frozenset({"general", "boilerplate", "narrow"}))] * 4
        + [w("document", frozenset({"general"}))] * 3
        + [w("document", frozenset({"boilerplate"}))] * 3
        + [w("document", frozenset({"solo"}))] * 60
    )
    broader = {"general": "topic", "narrow": "topic", "boilerplate": "params"}
    for near, far in (("topic", "params"), ("params", "topic")):
        centroids = unit_centroids(**{near: 20, far: 80, "general": 25, "boilerplate": 70,
                                      "narrow": 0, "solo": 180})  # fmt: skip
        got = {(b.src_id, b.kind, b.dst_id) for b in binding.bind(windows, centroids, broader)}
        assert ("narrow", "IS_A", near) in got and ("narrow", "IS_A", far) not in got
    # Equally near: the smaller id wins, so the same windows always give the same parent.
    centroids = unit_centroids(topic=20, params=-20, general=25, boilerplate=-25, narrow=0,
                               solo=180)  # fmt: skip
    assert ("narrow", "IS_A", "params") in {
        (b.src_id, b.kind, b.dst_id) for b in binding.bind(windows, centroids, broader)
    }


def test_grouping_puts_near_concepts_together_whatever_their_order() -> None:
    """Six concepts around two directions make two groups; the same concepts listed in
    another order make the same groups (the input is ordered by size and name)."""
    centroids = clustering.normalized(np.array(
        [[1, 0.1, 0], [1, -0.1, 0.1], [1, 0, -0.1], [0, 1, 0.1], [0.1, 1, 0], [0, 1, -0.1]]
    ))  # fmt: skip
    sizes, names = [30, 20, 10, 25, 15, 5], ["a", "b", "c", "d", "e", "f"]
    assert grouping.group_count(60) == 12 and grouping.group_count(9) == 0
    labels = grouping.group(centroids, sizes, names, 2)
    assert labels[0] == labels[1] == labels[2] != labels[3] == labels[4] == labels[5]
    order = [5, 3, 1, 0, 4, 2]
    again = grouping.group(
        centroids[order], [sizes[i] for i in order], [names[i] for i in order], 2
    )
    assert [again[order.index(i)] for i in range(6)] == labels.tolist()


# -- discovery over a synthetic corpus (no embedder: vectors written as they are) --------------


class StubEmbedder:
    """The model name and dimension the corpus was written with; discovery embeds nothing."""

    model_name, dimension = MODEL, DIMENSION

    tokenizer = None  # ingestion is never asked to chunk here

    def embed(self, texts: Sequence[str], *, spare_core: bool = False) -> np.ndarray:
        raise NotImplementedError


@pytest.fixture
def synthetic(tmp_path: Path, tenant_maker) -> Iterator[tuple[Platform, Corpus]]:
    """Five concepts in 8 dimensions: ``general`` in ten documents, ``narrow`` in four of
    them (always beside ``general``), ``left`` and ``right`` always together, ``solo`` alone
    in thirty (so ``general`` is no boilerplate)."""
    p = bootstrap(Settings(data_dir=tmp_path / "data"), embedder=StubEmbedder())  # type: ignore[arg-type]
    tenant = tenant_maker(p, "synthetic")
    corpus = Corpus(tenant.id)
    rng = np.random.default_rng(3)
    axes = {name: np.eye(DIMENSION)[i] for i, name in enumerate(["general", "narrow", "left",
                                                                  "right", "solo"])}  # fmt: skip
    words = {"general": "ledger balance account", "narrow": "overdraft penalty fee",
             "left": "harbour ship sail", "right": "anchor mooring dock",
             "solo": "glacier moraine crevasse"}  # fmt: skip
    plan = [["general", "narrow"]] * 4 + [["general"]] * 6 + [["left", "right"]] * 4
    plan += [["solo"]] * 30
    write_plan(p, corpus, plan, axes, words, rng)
    yield p, corpus
    p.close()


def write_plan(
    p: Platform, corpus: Corpus, plan: list[list[str]], axes: dict[str, np.ndarray],
    words: dict[str, str], rng: np.random.Generator,
) -> None:  # fmt: skip
    """One document per entry of ``plan``, three chunks per topic in it: the topic's axis
    plus noise, its words in the text."""
    n = 0
    for d, topics in enumerate(plan):
        texts, vectors = [], []
        for topic in topics:
            for _ in range(3):
                n += 1
                texts.append(f"{words[topic]} note {n}")
                vectors.append(axes[topic] + rng.normal(scale=0.05, size=DIMENSION))
        add_document(p.uow_factory, corpus, f"doc{d}", texts, vectors)


FINANCE = ["ledger", "overdraft", "mortgage", "pension", "audit", "invoice", "payroll", "tax"]


@pytest.fixture
def grouped(tmp_path: Path, tenant_maker) -> Iterator[tuple[Platform, Corpus]]:
    """Ten concepts in 8 dimensions, two topics: finance (``ledger`` on axis 0, seven more
    around it, each 0.7 along an axis of its own) and mountains (``glacier`` and ``moraine``
    around axis 1). Each of 21 finance documents holds ``ledger`` and one other finance
    concept; 35 documents hold ``glacier`` alone and 35 ``moraine`` alone."""
    p = bootstrap(Settings(data_dir=tmp_path / "data"), embedder=StubEmbedder())  # type: ignore[arg-type]
    tenant = tenant_maker(p, "grouped")
    corpus = Corpus(tenant.id)
    rng = np.random.default_rng(3)
    eye = np.eye(DIMENSION)
    offsets = [eye[2], eye[3], eye[4], eye[5], -eye[2], -eye[3], -eye[4]]
    axes = {"ledger": eye[0], "glacier": eye[1] + 0.7 * eye[6], "moraine": eye[1] + 0.7 * eye[7]}
    axes.update({name: eye[0] + 0.7 * o for name, o in zip(FINANCE[1:], offsets, strict=True)})
    plan = [["ledger", FINANCE[1 + d % 7]] for d in range(21)]
    plan += [["glacier"]] * 35 + [["moraine"]] * 35
    write_plan(p, corpus, plan, axes, {name: name for name in axes}, rng)
    yield p, corpus
    p.close()


def test_binding_makes_each_concept_a_part_of_its_group_and_a_rerun_changes_nothing(
    grouped,
) -> None:
    p, corpus = grouped
    first = p.concepts.run_now(corpus.tenant_id, "text", 10, "api")
    assert first["clustered"]["k"] == 10 and first["clustered"]["broad"] == 2
    fine = {c.terms[0]: c for c in p.concepts.page(corpus.tenant_id, None, 20, level=0).items}
    assert set(fine) == {*FINANCE, "glacier", "moraine"}  # each concept is one topic
    # Two groups, each a concept of level 1: finance, and the mountains.
    groups = p.concepts.page(corpus.tenant_id, None, 20, level=1).items
    broad = next(c for c in groups if c.id == fine["ledger"].broader_id)
    mountains = next(c for c in groups if c.id != broad.id)
    assert broad.size == sum(fine[name].size for name in FINANCE) == 21 * 6
    assert {name for name, c in fine.items() if c.broader_id == broad.id} == set(FINANCE)
    assert fine["glacier"].broader_id == fine["moraine"].broader_id == mountains.id
    assert mountains.size == 70 * 3
    view = p.concepts.get(corpus.tenant_id, broad.id)
    assert {c.id for c in view.narrower} == {fine[name].id for name in FINANCE}
    # Each finance concept but ledger is a part of it; ledger is in every finance document.
    assert {r.concept_id for r in view.children} == {fine[name].id for name in FINANCE[1:]}
    overdraft = p.concepts.get(corpus.tenant_id, fine["overdraft"].id)
    assert [(r.concept_id, r.kind, r.confidence) for r in overdraft.parents] == [
        (broad.id, "IS_A", 1.0)
    ]
    assert overdraft.parents[0].evidence["occurrences"] == {broad.id: 21, fine["overdraft"].id: 3}
    assert [r.concept_id for r in overdraft.related] == [fine["ledger"].id]
    assert not p.concepts.get(corpus.tenant_id, fine["ledger"].id).parents
    # The mountains are in 70 of 91 documents: too common to be anyone's parent (the lift).
    assert not p.concepts.get(corpus.tenant_id, fine["glacier"].id).parents
    assert not p.concepts.get(corpus.tenant_id, mountains.id).children
    assert first["bound"] == {"windows": 91, "is_a": 7, "related": 7, "added": 14, "removed": 0}
    # The broad concept's members are its group's, paged nearest their centroid first.
    seen, cursor = [], None
    while True:
        page = p.concepts.members(corpus.tenant_id, broad.id, cursor, 50)
        seen += page.items
        if (cursor := page.next_cursor) is None:
            break
    assert len({a for a, _ in seen}) == len(seen) == broad.size
    assert [d for _, d in seen] == sorted(d for _, d in seen)
    finance_chunks = {a for doc in range(21) for a in corpus.chunks[f"doc{doc}"]}
    assert {a for a, _ in seen} == finance_chunks
    again = p.concepts.run_now(corpus.tenant_id, "text", 10, "api", seed=1)
    assert again["clustered"]["kept"] == 10 and again["clustered"]["broad_kept"] == 2
    assert again["bound"]["added"] == 0 and again["bound"]["removed"] == 0
    again_groups = p.concepts.page(corpus.tenant_id, None, 20, level=1).items
    assert {c.id for c in again_groups} == {broad.id, mountains.id}
    # A chunk indexed later grows its concept and the concept's group.
    add_document(p.uow_factory, corpus, "late", ["audit late"], [np.eye(DIMENSION)[0]
                 + 0.7 * np.eye(DIMENSION)[5]])  # fmt: skip
    with p.uow_factory(write=True, tenant_id=corpus.tenant_id) as uow:
        p.concept_assigner.assign_in(uow, corpus.tenant_id, corpus.chunks["late"], MODEL)
        uow.commit()
    assert p.concepts.get(corpus.tenant_id, broad.id).concept.size == broad.size + 1

    # Fewer than ten concepts make no groups: the broad concept retires, and its IS_A go.
    fewer = p.concepts.run_now(corpus.tenant_id, "text", 5, "api")
    assert fewer["clustered"]["broad"] == 0 and fewer["bound"]["is_a"] == 0
    assert p.concepts.get(corpus.tenant_id, broad.id).concept.state != "active"
    # A concept that retires leaves its group: a retired group reaches none of them.
    gone = p.concepts.page(corpus.tenant_id, None, 50, state=None, level=0).items
    assert [c for c in gone if c.state != "active"] and all(c.broader_id is None for c in gone)
    assert not p.concepts.get(corpus.tenant_id, broad.id).narrower


def test_an_activity_replayed_answers_what_its_run_recorded(synthetic) -> None:
    p, corpus = synthetic
    run = p.concepts.prepare(corpus.tenant_id, "text", 5, "api")
    ref = RunRef(corpus.tenant_id, run.id)
    first = p.concepts.discovery.cluster(ref)
    with p.engines.read.connect() as conn:
        members = conn.execute(
            sa.select(sa.func.count()).where(edges.c.kind == BELONGS_TO_CONCEPT)
        ).scalar_one()
    assert p.concepts.discovery.cluster(ref) == first  # no second clustering, no new rows
    with p.engines.read.connect() as conn:
        assert (
            conn.execute(
                sa.select(sa.func.count()).where(edges.c.kind == BELONGS_TO_CONCEPT)
            ).scalar_one()
            == members
            == first.chunks
        )
    assert p.concepts.discovery.bind(ref) == p.concepts.discovery.bind(ref)
    with p.uow_factory(write=False, tenant_id=corpus.tenant_id) as uow:  # metered once
        used = {t.kind: t.quantity for t in uow.usage.totals(corpus.tenant_id, None, None)}
    assert used == {"concepts.chunks": first.chunks}
    p.concepts.discovery.finish(ref, None)
    assert p.concepts.discovery.finish(ref, "late")["status"] == "failed"  # the row is kept:
    with p.engines.read.connect() as conn:
        status = conn.execute(
            sa.select(concept_runs.c.status).where(concept_runs.c.id == run.id)
        ).scalar_one()
    assert status == "completed"


def test_new_chunks_join_their_nearest_concept_in_the_indexing_transaction(synthetic) -> None:
    p, corpus = synthetic
    p.concepts.run_now(corpus.tenant_id, "text", 5, "api")
    harbour = next(c for c in p.concepts.page(corpus.tenant_id, None, 10).items
                   if "harbour" in c.terms)  # fmt: skip
    vector = np.eye(DIMENSION)[2] + 0.01
    add_document(p.uow_factory, corpus, "late", ["harbour ship late"], [vector])
    atom_id = corpus.chunks["late"][0]
    assert p.concepts.of_atom(corpus.tenant_id, atom_id) is None  # written around ingestion
    with p.uow_factory(write=True, tenant_id=corpus.tenant_id) as uow:
        placed = p.concept_assigner.assign_in(uow, corpus.tenant_id, [atom_id], MODEL)
        uow.commit()
    assert placed == {atom_id: harbour.id}
    concept, distance = p.concepts.of_atom(corpus.tenant_id, atom_id)
    assert concept.id == harbour.id and concept.size == harbour.size + 1
    assert 0 <= distance < 0.05


# -- end to end on real text -------------------------------------------------------------------


@pytest.fixture
def api(pipeline_platform: Platform) -> Iterator[TestClient]:
    with TestClient(create_app(pipeline_platform)) as c:
        yield c


def ingest_families(api: TestClient, who, families: list[str]) -> dict[str, str]:
    """Ingest each family's modules; returns document atom id -> family."""
    started, family_of = [], {}
    for family, module, text in family_documents(families):
        meta = json.dumps({"filename": f"{module}.md", "family": family})
        headers = {**who.auth(), "Content-Type": "text/markdown", "X-Atom-Metadata": meta}
        r = api.post("/v1/ingestions", content=text.encode(), headers=headers)
        assert r.status_code == 202, r.text
        started.append(r.json())
        family_of[r.json()["atom_id"]] = family
    for s in started:
        assert finish(api, who, s)["runtimeStatus"] == "Completed"
    return family_of


def discover(api: TestClient, who, **body) -> dict:
    r = api.post("/v1/concepts/discover", json=body, headers=who.auth())
    assert r.status_code == 202, r.text
    assert r.headers["Location"] == r.json()["status_url"]
    status = finish(api, who, r.json())
    assert status["runtimeStatus"] == "Completed", status
    return status["output"]


def chunk_families(p: Platform, tenant_id: str, family_of: dict[str, str]) -> dict[str, str]:
    with p.engines.read.connect() as conn:
        rows = conn.execute(
            sa.select(edges.c.src_id, edges.c.dst_id).where(
                edges.c.tenant_id == tenant_id, edges.c.kind == HAS_CHUNK
            )
        ).all()
    out: dict[str, str] = {}
    for doc, chunk in rows:
        out.setdefault(chunk, family_of[doc])
    return out


def test_discovery_on_real_text_finds_the_families_and_everything_shows_them(
    api, pipeline_platform, tenant_maker
) -> None:
    p, alice = pipeline_platform, tenant_maker(pipeline_platform, "alice")
    family_of = ingest_families(api, alice, FAMILIES)
    out = discover(api, alice, k=3)
    assert out["status"] == "completed" and out["clustered"]["k_chosen_by"] == "given"
    page = api.get("/v1/concepts", headers=alice.auth("read")).json()
    assert len(page["items"]) == 3 and page["next_cursor"] is None
    names = " ".join(c["name"] for c in page["items"])
    for family in FAMILIES:
        assert family in names, names  # c-TF-IDF puts the package's name first

    # Members against the families they came from: the partition is the families'.
    labels = chunk_families(p, alice.id, family_of)
    member_of = {}
    for c in page["items"]:
        cursor, seen, last = None, [], -1.0
        while True:
            r = api.get(f"/v1/concepts/{c['id']}", headers=alice.auth("read"),
                        params={"members_limit": 7, **({"members_cursor": cursor} if cursor
                                                       else {})})  # fmt: skip
            assert r.status_code == 200, r.text
            detail = r.json()
            for m in detail["members"]["items"]:
                assert m["distance"] >= last  # nearest first, across pages
                last = m["distance"]
                seen.append(m["atom_id"])
            cursor = detail["members"]["next_cursor"]
            if cursor is None:
                break
        assert len(seen) == len(set(seen)) == c["size"]
        member_of.update({a: c["id"] for a in seen})
    assert set(member_of) == set(labels)
    atoms = sorted(labels)
    assert adjusted_rand_score([labels[a] for a in atoms], [member_of[a] for a in atoms]) >= 0.9

    # The concept atom's content is its description; each member's record shows its concept.
    email = next(c for c in page["items"] if "email" in c["name"])
    described = api.get(f"/v1/atoms/{email['atom_id']}/content", headers=alice.auth("read"))
    body = described.json()
    assert body["concept_id"] == email["id"] and body["name"] == email["name"]
    assert len(body["centroid"]) == 384 and body["size"] == email["size"]
    record = api.get(f"/v1/atoms/{email['atom_id']}", headers=alice.auth("read")).json()
    assert record["modality"] == "concept"
    member = next(a for a, c in member_of.items() if c == email["id"])
    shown = api.get(f"/v1/atoms/{member}", headers=alice.auth("read")).json()["concept"]
    assert shown["id"] == email["id"] and shown["name"] == email["name"]
    assert 0 <= shown["distance"] < 1

    # filters.concept_id in search and generation: only the concept's members come back,
    # even for a question about another concept.
    hits = api.post("/v1/search", headers=alice.auth("read"), json={
        "query": "the event loop runs coroutines and tasks", "k": 10,
        "filters": {"concept_id": email["id"]}}).json()["results"]  # fmt: skip
    assert hits and all(member_of[h["atom_id"]] == email["id"] for h in hits)
    asyncio_concept = next(c for c in page["items"] if "asyncio" in c["name"])
    gen = api.post("/v1/generate", headers=alice.auth(), json={
        "prompt": "What is an event loop?", "max_tokens": 4, "temperature": 0,
        "filters": {"concept_id": asyncio_concept["id"]}})  # fmt: skip
    assert gen.status_code == 200, gen.text
    used = [c for c in gen.json()["receipt"]["components"] if c["role"] == "retrieved"]
    assert used and all(member_of[c["atom_id"]] == asyncio_concept["id"] for c in used)

    # Capability search ranks concepts by their centroid, on the chunks' scale.
    found = api.post("/v1/capabilities/search", headers=alice.auth("read"), json={
        "query": "coroutines and the event loop", "kinds": ["concept"]}).json()  # fmt: skip
    assert found["items"][0]["id"] == asyncio_concept["id"]
    assert found["items"][0]["title"] == asyncio_concept["name"]
    query = p.knowledge.get().embedder.embed(["coroutines and the event loop"])[0]
    centroid = np.asarray(api.get(f"/v1/atoms/{asyncio_concept['atom_id']}/content",
                                  headers=alice.auth("read")).json()["centroid"])  # fmt: skip
    assert found["items"][0]["score"] == pytest.approx(float(centroid @ query), abs=1e-4)

    # A concept's description goes with the concept, not by hand.
    gone = api.delete(f"/v1/atoms/{email['atom_id']}", headers=alice.auth("admin"))
    assert gone.status_code == 409, gone.text

    # Another tenant sees none of it.
    bob = tenant_maker(p, "bob")
    assert api.get(f"/v1/concepts/{email['id']}", headers=bob.auth("read")).status_code == 404
    assert api.get("/v1/concepts", headers=bob.auth("read")).json()["items"] == []
    hits = api.post("/v1/search", headers=bob.auth("read"), json={
        "query": "message", "filters": {"concept_id": email["id"]}}).json()["results"]  # fmt: skip
    assert hits == []
    runs = api.get("/v1/concepts/runs", headers=alice.auth("read")).json()
    assert [r["status"] for r in runs] == ["completed"] and runs[0]["summary"]["clustered"]


def test_reruns_keep_ids_record_lineage_and_new_chunks_join_at_once(
    api, pipeline_platform, tenant_maker
) -> None:
    p, alice = pipeline_platform, tenant_maker(pipeline_platform, "alice")
    ingest_families(api, alice, FAMILIES)
    discover(api, alice, k=3)
    first = {
        c["id"]: c for c in api.get("/v1/concepts", headers=alice.auth("read")).json()["items"]
    }

    # Chunks indexed after the run join their nearest concept as they are indexed.
    email_id = next(i for i, c in first.items() if "email" in c["name"])
    extra = family_documents(["email"])[0][2].replace("email.message", "email.letters")
    r = api.post("/v1/ingestions", content=("# Mail notes\n\n" + extra).encode(),
                 headers={**alice.auth(), "Content-Type": "text/markdown"})  # fmt: skip
    assert finish(api, alice, r.json())["runtimeStatus"] == "Completed"
    with p.engines.read.connect() as conn:
        new_chunks = (
            conn.execute(
                sa.select(edges.c.dst_id).where(
                    edges.c.kind == HAS_CHUNK, edges.c.src_id == r.json()["atom_id"]
                )
            )
            .scalars()
            .all()
        )
    placed = [api.get(f"/v1/atoms/{a}", headers=alice.auth("read")).json()["concept"]
              for a in new_chunks]  # fmt: skip
    assert placed and all(c is not None for c in placed)
    assert sum(c["id"] == email_id for c in placed) >= len(placed) / 2

    # The same k again: every id kept. One more: a split of one of them.
    same = discover(api, alice, k=3)["clustered"]
    assert same["kept"] == 3 and same["created"] == 0
    assert {
        c["id"] for c in api.get("/v1/concepts", headers=alice.auth("read")).json()["items"]
    } == set(first)
    more = discover(api, alice, k=4)["clustered"]
    assert more["kept"] == 3 and more["created"] == 1 and more["splits"] == 1
    items = api.get("/v1/concepts", headers=alice.auth("read")).json()["items"]
    new = next(c for c in items if c["id"] not in first)
    lineage = api.get(f"/v1/concepts/{new['id']}", headers=alice.auth("read")).json()["lineage"]
    assert [(x["kind"], x["concept_id"] in first) for x in lineage] == [("SPLIT_FROM", True)]
    # Fewer: one concept merges into another and retires.
    fewer = discover(api, alice, k=2)["clustered"]
    assert fewer["retired"] == 2 and fewer["merges"] >= 1
    merged = api.get("/v1/concepts", headers=alice.auth("read"),
                     params={"state": "merged"}).json()["items"]  # fmt: skip
    assert merged
    lineage = api.get(f"/v1/concepts/{merged[0]['id']}", headers=alice.auth("read")).json()
    assert any(x["kind"] == "MERGED_INTO" for x in lineage["lineage"])
    # A description a run replaced is gone: one atom per concept, each its current one.
    every = api.get("/v1/concepts", headers=alice.auth("read"), params={"state": "all"}).json()
    described = api.get("/v1/atoms", headers=alice.auth("read"),
                        params={"modality": "concept", "limit": 100}).json()["items"]  # fmt: skip
    assert sorted(a["id"] for a in described) == sorted(c["atom_id"] for c in every["items"])


def test_bad_input_is_refused_clearly(api, pipeline_platform, tenant_maker) -> None:
    p, alice = pipeline_platform, tenant_maker(pipeline_platform, "alice")
    for body in ({"k": 1}, {"k": 257}, {"modality": "concept"}, {"modality": "smell"},
                 {"k": 3, "extra": True}):  # fmt: skip
        r = api.put("/v1/concepts/schedule", json={"enabled": True, **body}, headers=alice.auth())
        assert r.status_code == 422, (body, r.text)
        r = api.post("/v1/concepts/discover", json=body, headers=alice.auth())
        assert r.status_code == 422, (body, r.text)
        assert r.headers["content-type"].startswith("application/problem+json")
    # Too little to cluster: says how much is needed.
    few = api.post("/v1/concepts/discover", json={"k": 4}, headers=alice.auth())
    assert few.status_code == 422
    assert few.json()["needed"] == 20 and few.json()["found"] == 0
    assert "20 chunks" in few.json()["detail"]
    assert api.post("/v1/concepts/discover", json={}, headers=alice.auth("read")).status_code == 403
    # One discovery per tenant and modality at a time.
    ingest_families(api, alice, ["email"])
    running = p.concepts.prepare(alice.id, "text", 2, "api")
    busy = api.post("/v1/concepts/discover", json={"k": 2}, headers=alice.auth())
    assert busy.status_code == 409, busy.text
    assert busy.json()["run_id"] == running.id
    p.concepts.abandon(alice.id, running.id, "test")
    assert api.get("/v1/concepts/nope", headers=alice.auth("read")).status_code == 404
    assert api.get("/v1/concepts", headers=alice.auth("read"),
                   params={"cursor": "garbage"}).status_code == 400  # fmt: skip


def test_a_discovery_the_credits_cannot_cover_is_refused_before_it_starts(
    tmp_path: Path, tenant_maker
) -> None:
    settings = Settings(data_dir=tmp_path / "data", billing_starting_credits=0)
    p = bootstrap(settings, embedder=StubEmbedder())  # type: ignore[arg-type]
    try:
        tenant = tenant_maker(p, "broke")
        corpus = Corpus(tenant.id)
        rng = np.random.default_rng(5)
        for d in range(3):
            vectors = [np.eye(DIMENSION)[d % 2] + rng.normal(scale=0.05, size=DIMENSION)
                       for _ in range(10)]  # fmt: skip
            add_document(p.uow_factory, corpus, f"doc{d}", [f"note {d} {i}" for i in range(10)],
                         vectors)  # fmt: skip
        with pytest.raises(PaymentRequired) as refused:
            p.concepts.prepare(tenant.id, "text", 2, "api")
        # Priced on the tenant's 30 chunks at 0.05 credits per 1,000.
        assert refused.value.extensions == {"balance": 0, "estimate": 0.0015}
        with p.uow_factory(write=False) as uow:
            assert uow.concepts.runs(tenant.id, 10) == []  # nothing recorded
        p.credits.grant(tenant.id, 1, promotional=True)
        assert p.concepts.prepare(tenant.id, "text", 2, "api").status == "running"
    finally:
        p.close()


def test_the_hourly_timer_discovers_for_tenants_that_enabled_it(
    api, pipeline_platform, tenant_maker
) -> None:
    p, alice = pipeline_platform, tenant_maker(pipeline_platform, "alice")
    bob = tenant_maker(p, "bob")
    ingest_families(api, alice, ["email", "xml"])
    r = api.put("/v1/concepts/schedule", json={"enabled": True, "k": 2}, headers=alice.auth())
    assert r.status_code == 200 and r.json() == [{"modality": "text", "enabled": True, "k": 2}]
    assert api.get("/v1/concepts/schedule", headers=bob.auth("read")).json() == []
    # Bob has no code chunks: his schedule is skipped (and logged), not an error.
    api.put("/v1/concepts/schedule", json={"enabled": True, "modality": "code"},
            headers=bob.auth())  # fmt: skip
    assert p.workflows is not None
    started = asyncio.run(p.concepts.start_scheduled(p.workflows.client))
    assert started == 1
    runs = api.get("/v1/concepts/runs", headers=alice.auth("read")).json()
    assert [r["origin"] for r in runs] == ["schedule"]
    assert finish(api, alice, {"status_url": f"/v1/workflows/{runs[0]['instance_id']}"})[
        "runtimeStatus"] == "Completed"  # fmt: skip
    assert len(api.get("/v1/concepts", headers=alice.auth("read")).json()["items"]) == 2


def test_the_loop_runs_discovery_as_a_typed_action(synthetic) -> None:
    """Analyze finds a modality whose chunks belong to no concept; ``discover_concepts``
    clusters it once however often it is applied, and its metric is the share clustered."""
    p, corpus = synthetic
    rng = np.random.default_rng(5)
    for d in range(20):  # past the signal's 100 chunks
        vectors = [np.eye(DIMENSION)[0] + rng.normal(scale=0.05, size=DIMENSION)
                   for _ in range(3)]  # fmt: skip
        add_document(p.uow_factory, corpus, f"more{d}", [f"ledger more {d} {i}" for i in
                                                          range(3)], vectors)  # fmt: skip
    analyzer = Analyzer(p.uow_factory, lambda: p.knowledge.get().search, p.autonomy.policy)
    problems, _ = analyzer.signals(corpus.tenant_id, utcnow())
    found = [x for x in problems if x.kind == ProblemKind.UNCLUSTERED_CHUNKS.value]
    assert [x.evidence["modality"] for x in found] == ["text"]
    assert found[0].evidence["unclustered"] == found[0].evidence["chunks"] == 216
    assert deterministic(found[0])[0].parameters == {"modality": "text"}

    action = autonomy_executors(p)()["discover_concepts"]
    ctx = ActionContext(corpus.tenant_id, "run-1", "action-1", {"modality": "text"})
    assert action.measure(ctx).value == 0.0
    action.check(ctx)
    first = action.apply(ctx)
    assert first["chunks"] == 216 and first["concepts"] >= 2
    assert action.apply(ctx) == first  # a replayed apply runs nothing again
    runs = p.concepts.runs(corpus.tenant_id, 10)
    assert [(r.origin, r.instance_id) for r in runs] == [("loop", "loop-action-1")]
    assert action.measure(ctx).value == 1.0
    problems, _ = analyzer.signals(corpus.tenant_id, utcnow())
    assert not [x for x in problems if x.kind == ProblemKind.UNCLUSTERED_CHUNKS.value]

    other = ActionContext(corpus.tenant_id, "run-1", "action-2", {"modality": "text"})
    running = p.concepts.prepare(corpus.tenant_id, "text", 2, "api")
    with pytest.raises(Conflict):
        action.check(other)
    p.concepts.abandon(corpus.tenant_id, running.id, "test")
    with pytest.raises(UnprocessableContent):
        action.check(ActionContext(corpus.tenant_id, "r", "action-3", {"modality": "code"}))


def test_the_operator_discovers_from_the_command_line(tmp_path: Path) -> None:
    """``hartonomous concepts discover`` runs in its own process, without a workflow host."""
    data = tmp_path / "store"
    cli = [str(Path(sys.executable).parent / "hartonomous")]
    env = {**os.environ, "COLUMNS": "200"}

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*cli, *args, "--data-dir", str(data)], capture_output=True,
                              text=True, timeout=300, env=env)  # fmt: skip

    made = subprocess.run([*cli, "tenant", "create", "ops", "--data-dir", str(data)],
                          capture_output=True, text=True, timeout=120, env=env)  # fmt: skip
    assert made.returncode == 0, made.stderr
    few = run("concepts", "discover", "ops", "--k", "3")
    assert (
        few.returncode != 0 and "15 chunks of modality 'text' are needed" in few.stderr + few.stdout
    )
    p = bootstrap(Settings(data_dir=data))
    tenant = tenant_service.find_tenant(p.uow_factory, name_or_id="ops")
    corpus, rng = Corpus(tenant.id), np.random.default_rng(1)
    for topic, axis in (("harbour ship", 0), ("ledger account", 1), ("kernel thread", 2)):
        vectors = [np.eye(384)[axis] + rng.normal(scale=0.02, size=384) for _ in range(6)]
        add_document(p.uow_factory, corpus, topic, [f"{topic} note {i}" for i in range(6)],
                     vectors, model=MINILM)  # fmt: skip
    p.close()
    done = run("concepts", "discover", "ops", "--k", "3")
    assert done.returncode == 0, done.stderr
    assert "18 chunks, k=3 (given)" in done.stdout
    listed = run("concepts", "list", "ops")
    assert listed.returncode == 0
    for word in ("harbour", "ledger", "kernel"):
        assert word in listed.stdout
