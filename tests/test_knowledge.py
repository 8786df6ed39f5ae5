"""Ingestion and search end to end: the API, the local Durable host, MiniLM, SQLite FTS5."""

from __future__ import annotations

import time
from collections.abc import Iterator

import numpy as np
import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from workflow_polling import finish

from hartonomous.api.app import create_app
from hartonomous.bootstrap import Platform
from hartonomous.knowledge.embeddings import MiniLMEmbedder, minilm_path
from hartonomous.store.schema import chunks, edges, embeddings

SOLAR = """# The solar system

The Sun is the star at the centre of the solar system. Its gravity holds the planets in orbit.

## Planets

Mercury is the smallest planet and the closest to the Sun. Venus has a thick atmosphere of
carbon dioxide that traps heat, making it the hottest planet.

Earth is the only planet known to support life. Liquid water covers most of its surface.

Mars is a cold desert world with the largest volcano in the solar system, Olympus Mons.
"""

COOKING = """# Baking bread

Bread dough needs flour, water, salt and yeast. Knead the dough until it is smooth and
elastic, then let it rise in a warm place until it doubles in size.

Bake the loaf in a hot oven until the crust is golden and it sounds hollow when tapped.
"""


@pytest.fixture
def kp(pipeline_platform: Platform) -> Platform:
    return pipeline_platform


@pytest.fixture
def api(kp: Platform) -> Iterator[TestClient]:
    with TestClient(create_app(kp)) as c:
        yield c


def ingest(api: TestClient, who, text: str, media_type="text/markdown", meta=None) -> dict:
    headers = {**who.auth(), "Content-Type": media_type}
    if meta:
        headers["X-Atom-Metadata"] = meta
    r = api.post("/v1/ingestions", content=text.encode(), headers=headers)
    assert r.status_code == 202, r.text
    return r.json()


def search(api: TestClient, who, query: str, **kw) -> list[dict]:
    r = api.post("/v1/search", json={"query": query, **kw}, headers=who.auth("read"))
    assert r.status_code == 200, r.text
    return r.json()["results"]


def count(kp: Platform, table) -> int:
    with kp.engines.read.connect() as conn:
        return int(conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one())


def test_ingest_then_search_by_meaning_words_and_both(api, kp, tenant_maker):
    alice = tenant_maker(kp, "alice")
    started = ingest(api, alice, SOLAR, meta='{"topic": "space"}')
    assert set(started) == {"atom_id", "instance_id", "status_url", "deduplicated"}
    status = finish(api, alice, started)
    assert status["runtimeStatus"] == "Completed", status
    assert status["customStatus"]["stage"] == "indexed"
    total = status["customStatus"]["chunks_total"]
    assert status["output"]["chunks"] == total >= 1
    ingest_done = finish(api, alice, ingest(api, alice, COOKING, meta='{"topic": "food"}'))
    assert ingest_done["runtimeStatus"] == "Completed"

    best = search(api, alice, "which planet is hottest because of greenhouse gases", mode="vector")
    assert best[0]["document_id"] == started["atom_id"] and "Venus" in best[0]["text"]
    assert best[0]["rank"] == 1 and 0 < best[0]["score"] <= 1
    assert best[0]["ordinal"] is not None and best[0]["end"] > best[0]["start"]

    words = search(api, alice, "Olympus Mons volcano", mode="keyword")
    assert "Olympus Mons" in words[0]["text"]
    assert any("<mark>" in h for h in words[0]["highlights"])

    both = search(api, alice, "how long should dough rise", mode="hybrid", k=3)
    assert "dough" in both[0]["text"] and len(both) <= 3

    food = search(api, alice, "planets", filters={"metadata": {"topic": "food"}})
    assert all("dough" in r["text"] or "Bread" in r["text"] for r in food)
    only = search(api, alice, "planets", filters={"document_id": started["atom_id"]}, k=50)
    assert only and all(r["document_id"] == started["atom_id"] for r in only)
    assert search(api, alice, "planets", filters={"media_type": "text/html"}) == []


def test_search_never_crosses_tenants(api, kp, tenant_maker):
    alice, bob = tenant_maker(kp, "alice"), tenant_maker(kp, "bob")
    assert finish(api, alice, ingest(api, alice, SOLAR))["runtimeStatus"] == "Completed"
    for mode in ("vector", "keyword", "hybrid"):
        assert search(api, bob, "Venus atmosphere", mode=mode) == []
    started = ingest(api, alice, COOKING)
    assert api.get(started["status_url"], headers=bob.auth()).status_code == 404


def test_reingesting_the_same_bytes_does_no_embedding_work(api, kp, tenant_maker):
    alice = tenant_maker(kp, "alice")
    first = finish(api, alice, ingest(api, alice, SOLAR))
    vectors, chunk_rows, edge_rows = count(kp, embeddings), count(kp, chunks), count(kp, edges)
    again = ingest(api, alice, SOLAR)
    assert again["deduplicated"] is True
    second = finish(api, alice, again)
    assert second["output"]["already_indexed"] is True
    assert second["output"]["reused_embeddings"] == first["output"]["chunks"]
    assert (count(kp, embeddings), count(kp, chunks), count(kp, edges)) == (
        vectors,
        chunk_rows,
        edge_rows,
    )


def test_an_edited_document_reuses_its_unchanged_chunks(api, kp, tenant_maker):
    alice = tenant_maker(kp, "alice")
    long_doc = "\n\n".join(f"Section {i}. " + SOLAR for i in range(6))
    finish(api, alice, ingest(api, alice, long_doc))
    vectors = count(kp, embeddings)
    edited = long_doc.replace("Section 5.", "Section five, rewritten with new words.", 1)
    result = finish(api, alice, ingest(api, alice, edited))["output"]
    assert result["reused_embeddings"] >= result["chunks"] - 2
    assert count(kp, embeddings) - vectors <= 2


def test_an_unparseable_document_fails_clearly_and_indexes_nothing(api, kp, tenant_maker):
    alice = tenant_maker(kp, "alice")
    started = ingest(api, alice, " \n\t\n", media_type="text/plain")  # empty: a 400
    status = finish(api, alice, started)
    assert status["runtimeStatus"] == "Failed"
    assert "the document has no text" in status["error"]
    assert (count(kp, chunks), count(kp, edges), count(kp, embeddings)) == (0, 0, 0)


def test_unsupported_types_are_refused_before_any_workflow(api, kp, tenant_maker):
    alice = tenant_maker(kp, "alice")
    r = api.post(
        "/v1/ingestions",
        content=b"GIF89a...",
        headers={**alice.auth(), "Content-Type": "image/gif"},
    )
    assert r.status_code == 422 and r.headers["content-type"] == "application/problem+json"
    assert "cannot be ingested" in r.json()["detail"]


def test_search_validation_and_knowledge_gaps(api, kp, tenant_maker):
    alice = tenant_maker(kp, "alice")
    finish(api, alice, ingest(api, alice, SOLAR))
    invalid = [
        {"query": ""},
        {"query": "x", "k": 0},
        {"query": "x", "k": 101},
        {"query": "x", "mode": "fuzzy"},
        {"query": "x", "filters": {"colour": "red"}},
    ]
    for bad in invalid:
        r = api.post("/v1/search", json=bad, headers=alice.auth())
        assert r.status_code == 422 and r.headers["content-type"] == "application/problem+json"
    search(api, alice, "quarterly tax filing deadlines for small businesses", mode="vector")
    gaps = api.get("/v1/knowledge-gaps", headers=alice.auth()).json()
    assert gaps[0]["query"].startswith("quarterly tax") and gaps[0]["best_score"] < 0.35


def test_deleting_a_chunk_atom_removes_it_from_search(api, kp, tenant_maker):
    alice = tenant_maker(kp, "alice")
    finish(api, alice, ingest(api, alice, SOLAR))
    hit = search(api, alice, "Olympus Mons", mode="keyword")[0]
    assert api.delete(f"/v1/atoms/{hit['atom_id']}", headers=alice.auth()).status_code == 204
    for mode in ("keyword", "vector"):
        assert hit["atom_id"] not in {
            r["atom_id"] for r in search(api, alice, "Olympus Mons", mode=mode)
        }


def test_large_tenants_get_an_ann_index_that_agrees_with_exact_search(api, kp, tenant_maker):
    from hartonomous.knowledge.vectors import VectorIndex

    alice = tenant_maker(kp, "alice")
    finish(api, alice, ingest(api, alice, SOLAR))
    finish(api, alice, ingest(api, alice, COOKING))
    knowledge = kp.knowledge.get()
    exact = knowledge.index
    ann = VectorIndex(kp.uow_factory, exact.model, exact.dimension, ann_threshold=1)
    assert ann.refresh(alice.id) == exact.size(alice.id) > 1
    assert ann.wait_for_ann(alice.id, timeout=30)
    query = knowledge.embedder.embed(["the hottest planet"])[0]
    (best_exact, score_exact), *_ = exact.search(alice.id, query, 3)
    (best_ann, score_ann), *_ = ann.search(alice.id, query, 3)
    assert best_ann == best_exact and abs(score_ann - score_exact) < 1e-3
    # A filter keeps search exact over the allowed rows.
    allowed = {best_exact}
    assert ann.search_among(alice.id, query, 3, allowed) == exact.search_among(
        alice.id, query, 3, allowed
    )


def test_keyword_queries_leave_out_terms_most_chunks_contain(api, kp, tenant_maker):
    alice = tenant_maker(kp, "alice")
    notes = [f"Widget order {n}: the widgets ship on {day}." for n, day in
             enumerate(["Monday", "Tuesday", "Wednesday", "Thursday"])]  # fmt: skip
    notes.append("The sprocket order ships with a spare widget.")
    for note in notes:
        assert finish(api, alice, ingest(api, alice, note, "text/plain"))["runtimeStatus"] == (
            "Completed"
        )
    # "widget" is in every chunk: FTS5's BM25 gives it no weight, so it only costs; the
    # query keeps the informative term, and rows matching nothing else drop out.
    hits = search(api, alice, "widgets sprocket", mode="keyword")
    assert [h["text"] for h in hits] == [notes[-1]]
    assert "<mark>sprocket</mark>" in hits[0]["highlights"][0]
    # A query of common terms only keeps its rarest one (stemmed as the index is).
    assert len(search(api, alice, "Widgets", mode="keyword")) == len(notes)
    with kp.uow_factory(write=False, tenant_id=alice.id) as uow:
        assert uow.knowledge.keyword_search(alice.id, "  ?! ", 10) == []


def test_embeddings_match_sentence_transformers_in_both_precisions():
    # Lengths differ, so the length-sorted mini-batches (3 of them) must be put back in order.
    texts = [
        "the hottest planet",
        "Bread dough needs flour, water, salt and yeast; knead it for ten minutes.",
        "ok",
        "A context manager that ignores the exceptions it is given, then carries on.",
        "Return the n largest elements of a dataset.",
    ] * 2
    vectors = {}
    for precision in ("float32", "bfloat16"):
        embedder = MiniLMEmbedder(precision=precision, batch_size=4)
        vectors[precision] = embedder.embed(texts)
        assert embedder.uses_bfloat16 == (precision == "bfloat16")
    from sentence_transformers import SentenceTransformer

    reference = SentenceTransformer(str(minilm_path()), device="cpu").encode(
        texts, normalize_embeddings=True
    )
    assert np.allclose(vectors["float32"], reference, atol=1e-5)
    cosines = (reference * vectors["bfloat16"]).sum(axis=1)
    assert cosines.min() > 0.999
    assert np.allclose(np.linalg.norm(vectors["bfloat16"], axis=1), 1, atol=1e-3)


def test_one_text_takes_the_query_encoder_and_matches_sentence_transformers():
    # One text at a time (a search query) skips transformers' modules: same vectors, to the
    # float32 rounding of a different order of the same operations.
    texts = ["ok", "which planet is the hottest", "a fairly long passage " * 120]  # truncated
    embedder = MiniLMEmbedder(precision="float32")
    assert embedder._load() is not None and embedder._query is not None
    from sentence_transformers import SentenceTransformer

    reference = SentenceTransformer(str(minilm_path()), device="cpu").encode(
        texts, normalize_embeddings=True
    )
    for text, expected in zip(texts, reference, strict=True):
        (alone,) = embedder.embed([text])
        assert np.allclose(alone, expected, atol=1e-5)
    # A batch of them takes transformers' path and agrees too.
    assert np.allclose(embedder.embed(texts), reference, atol=1e-5)


def test_concurrent_embeddings_are_coalesced_and_each_caller_gets_its_own_rows(embedder):
    import threading

    requests = [[f"note {i}.{j} about planet number {i}" for j in range(i + 1)] for i in range(6)]
    alone = [embedder.embed(texts) for texts in requests]
    batches: list[int] = []
    run = embedder._run

    def counting_run(model, batch):
        batches.append(len(batch))
        run(model, batch)

    embedder._run = counting_run
    results: dict[int, np.ndarray] = {}
    try:
        with embedder._busy:  # the model is busy: all six callers queue up meanwhile
            threads = [
                threading.Thread(target=lambda i=i, t=t: results.__setitem__(i, embedder.embed(t)))
                for i, t in enumerate(requests)
            ]
            for thread in threads:
                thread.start()
            deadline = time.monotonic() + 10
            while len(embedder._pending) < len(requests) and time.monotonic() < deadline:
                time.sleep(0.01)
        for thread in threads:
            thread.join(30)
    finally:
        del embedder._run
    assert batches == [len(requests)]  # one batch served all six
    for i, texts in enumerate(requests):
        assert results[i].shape == (len(texts), embedder.dimension)
        assert (results[i] * alone[i]).sum(axis=1).min() > 0.999
