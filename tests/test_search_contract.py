"""The search ports' contract, run against every adapter that runs here: the keyword index
(SQLite FTS5) and vector search (exact in memory, usearch HNSW). Filters are pushed into the
query: a selective filter finds its hits even when they rank below the tenant's top list."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import pytest
from knowledge_corpus import DIMENSION, MODEL, Corpus, add_document, unit

from conftest import TenantKeys
from hartonomous.bootstrap import Platform
from hartonomous.errors import UnprocessableContent
from hartonomous.knowledge.search import Mode, SearchService
from hartonomous.knowledge.store import SearchFilter
from hartonomous.knowledge.vectors import VectorIndex
from hartonomous.store.background import BackgroundWriter

NEAR = unit([1, 0.1, 0, 0, 0, 0, 0, 0])
FAR = unit([0, 0, 0, 0, 0, 0, 1, 0.2])
TEAM_RED = SearchFilter(metadata={"team": "red"})


@pytest.fixture
def corpus(platform: Platform, alice: TenantKeys, bob: TenantKeys) -> Corpus:
    """60 chunks saying "mars" over and over, near the query vector; 2 chunks of the red
    team's document that say it once, far from it; bob's chunks about mars too."""
    c = Corpus(alice.id)
    popular = [f"mars mars mars rover {i} mars" for i in range(60)]
    add_document(platform.uow_factory, c, "popular", popular,
                 [unit(NEAR + 0.01 * i) for i in range(60)], {"team": "blue"})  # fmt: skip
    niche = [
        "A long report on budgets, staffing, travel, and once, in passing, mars itself.",
        "Minutes of a meeting about the canteen menu, parking, and a mars bar.",
    ]
    add_document(platform.uow_factory, c, "niche", niche, [FAR, unit(FAR + 0.01)],
                 {"team": "red", "year": 2020, "draft": False, "big": 1e20, "ratio": 0.5,
                  "code": "2020"})  # fmt: skip
    other = Corpus(bob.id)
    add_document(platform.uow_factory, other, "bob", ["mars mars red team"], [NEAR],
                 {"team": "red"})  # fmt: skip
    return c


def keyword(platform: Platform, tenant: str, query: str, limit: int,
            flt: SearchFilter | None = None) -> list[str]:  # fmt: skip
    with platform.uow_factory(write=False, tenant_id=tenant) as uow:
        return [h.atom_id for h in uow.knowledge.keyword_search(tenant, query, limit, flt)]


# -- keyword index --------------------------------------------------------------------------


def test_keyword_hits_are_the_tenants_best_first(platform: Platform, corpus: Corpus) -> None:
    hits = keyword(platform, corpus.tenant_id, "mars", 10)
    assert len(hits) == 10 and set(hits) <= set(corpus.chunks["popular"])
    assert keyword(platform, corpus.tenant_id, "?! --", 10) == []


def test_a_selective_filter_finds_keyword_hits_below_the_tenant_wide_top_list(
    platform: Platform, corpus: Corpus
) -> None:
    assert not set(keyword(platform, corpus.tenant_id, "mars", 50)) & set(corpus.chunks["niche"])
    found = keyword(platform, corpus.tenant_id, "mars", 5, TEAM_RED)
    assert sorted(found) == sorted(corpus.chunks["niche"])  # bob's red document stays out


def test_forgotten_chunks_leave_the_keyword_index(platform: Platform, corpus: Corpus) -> None:
    gone = corpus.chunks["niche"][0]
    with platform.uow_factory(write=True, tenant_id=corpus.tenant_id) as uow:
        uow.knowledge.forget_atom(corpus.tenant_id, gone)
        uow.commit()
    assert keyword(platform, corpus.tenant_id, "mars", 5, TEAM_RED) == [corpus.chunks["niche"][1]]


# -- metadata filters --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("metadata", "matches"),
    [
        ({"team": "red"}, True),
        ({"year": 2020}, True),
        ({"draft": False}, True),
        ({"team": "red", "year": 2020}, True),
        ({"year": 2021}, False),
        ({"draft": True}, False),
        ({"missing": "x"}, False),
        # Numbers compare as numbers (SQLite writes 1e20 as 1.0e+20, JSON_VALUE as 1e+20).
        ({"year": 2020.0}, True),
        ({"big": 1e20}, True),
        ({"big": 10.0**20}, True),
        ({"big": 1e20 + 2**20}, False),
        ({"ratio": 0.5}, True),
        ({"ratio": 0.25}, False),
        # ... and strings as strings: the number 2020 is not the string "2020".
        ({"year": "2020"}, False),
        ({"code": 2020}, False),
        ({"code": "2020"}, True),
    ],
)
def test_metadata_filters_compare_json_scalars(
    platform: Platform, corpus: Corpus, metadata: dict[str, object], matches: bool
) -> None:
    with platform.uow_factory(write=False, tenant_id=corpus.tenant_id) as uow:
        allowed = uow.knowledge.allowed_chunks(corpus.tenant_id, SearchFilter(metadata=metadata))
    assert allowed == (set(corpus.chunks["niche"]) if matches else set())


@pytest.mark.parametrize(
    "metadata",
    [{'a"b': "x"}, {"a\\b": "x"}, {"": "x"}, {"k" * 129: "x"}, {"a": None}, {"a": [1]},
     {"a": float("nan")}, {"a": "x" * 4001}, {f"k{i}": 1 for i in range(33)},
     # What the API refuses, every door refuses (domain/metadata.py's rules).
     {"k" * 65: "x"}, {"a\n": "x"}, {"a@b": "x"}, {"a/b": "x"}, {"é": "x"}, {"a": "x" * 1025},
     {f"k{i}": 1 for i in range(17)}, {"a": 2**70}],
)  # fmt: skip
def test_odd_metadata_filters_are_refused_before_any_sql(metadata: dict[str, object]) -> None:
    with pytest.raises(UnprocessableContent):
        SearchFilter(metadata=metadata)


# -- vector search ---------------------------------------------------------------------------


@pytest.fixture(params=["exact", "hnsw"])
def index(request: pytest.FixtureRequest, platform: Platform, corpus: Corpus) -> VectorIndex:
    threshold = None if request.param == "exact" else 1
    built = VectorIndex(platform.uow_factory, MODEL, DIMENSION, ann_threshold=threshold)
    assert built.refresh(corpus.tenant_id) == 62
    if threshold is not None:
        assert built.wait_for_ann(corpus.tenant_id, timeout=30)
    return built


def test_vector_hits_are_the_tenants_nearest(index: VectorIndex, corpus: Corpus) -> None:
    found = index.search(corpus.tenant_id, NEAR, 5)
    assert len(found) == 5 and {a for a, _ in found} <= set(corpus.chunks["popular"])
    assert [s for _, s in found] == sorted((s for _, s in found), reverse=True)
    assert found[0][1] > 0.99


def test_a_selective_filter_finds_vectors_far_from_the_top_list(
    index: VectorIndex, corpus: Corpus
) -> None:
    found = index.search(corpus.tenant_id, NEAR, 5, TEAM_RED)
    assert sorted(a for a, _ in found) == sorted(corpus.chunks["niche"])


# -- the search service over both ports --------------------------------------------------


class FixedEmbedder:
    model_name, dimension = MODEL, DIMENSION

    @property
    def tokenizer(self) -> object:
        raise NotImplementedError

    def embed(self, texts: Sequence[str], *, spare_core: bool = False) -> np.ndarray:
        return np.stack([NEAR for _ in texts])


@pytest.fixture
def service(platform: Platform, corpus: Corpus) -> Iterator[SearchService]:
    index = VectorIndex(platform.uow_factory, MODEL, DIMENSION)
    writes = BackgroundWriter(platform.uow_factory)
    yield SearchService(platform.uow_factory, FixedEmbedder(), index, writes)  # type: ignore[arg-type]
    writes.flush()


@pytest.mark.parametrize("mode", list(Mode))
def test_every_mode_pushes_a_selective_filter_down(
    service: SearchService, corpus: Corpus, mode: Mode
) -> None:
    found = service.search(tenant_id=corpus.tenant_id, query="mars", k=3, mode=mode,
                           flt=TEAM_RED)  # fmt: skip
    assert sorted(r.atom_id for r in found) == sorted(corpus.chunks["niche"])
    assert {r.document_id for r in found} == {corpus.documents["niche"]}
