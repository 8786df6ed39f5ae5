"""Broad concepts: a run's concepts grouped by their centroids, one level up.

Co-occurrence over one flat clustering cannot tell a concept's broader topic from the
boilerplate its documents carry: both are found everywhere the concept is (docs/concepts.md
has the figures: 0.46 IS_A precision held out). A coarser level can. Each run groups its k
concepts' unit centroids, weighted by their sizes, into ``k // GROUP_RATIO`` groups by
spherical k-means: the chunks' k-means with each concept collapsed to its centroid, so it
costs milliseconds where clustering 100k chunks a second time costs seconds. A group that
holds two concepts or more becomes a concept of level 1; binding then tests each concept
against the groups with the subsumption rule (binding.py).

The concepts go in ordered by (size descending, name), so the grouping does not depend on
their random ids, and each restart is seeded: the same concepts give the same groups.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.typing import NDArray
from scipy.sparse import csr_matrix
from sklearn.cluster import KMeans

from hartonomous.concepts.clustering import Matrix, normalized

GROUP_RATIO = 5  # k concepts make k // 5 groups: 60 make 12
MIN_GROUPS = 2  # fewer is no grouping at all
MIN_CHILDREN = 2  # a group of one concept would only repeat it
RESTARTS = 8
MAX_ITERATIONS = 50


def group_count(k: int) -> int:
    """How many groups ``k`` concepts make (0: none)."""
    groups = k // GROUP_RATIO
    return groups if groups >= MIN_GROUPS else 0


def group(
    centroids: Matrix, sizes: Sequence[int], names: Sequence[str], groups: int
) -> NDArray[np.int64]:
    """Each concept's group, 0..groups-1: k-means++ seeding and Lloyd (scikit-learn's
    ``KMeans``, weighted by size) from ``RESTARTS`` seeds, each settled by spherical Lloyd
    (assign by cosine, centre = normalised weighted sum), the least weighted inertia kept."""
    order = sorted(range(len(names)), key=lambda i: (-sizes[i], names[i]))
    c = normalized(np.asarray(centroids)[order])
    w = np.asarray(sizes, dtype=np.float64)[order]
    best: tuple[float, NDArray[np.int64]] | None = None
    centres = c[:0]
    for seed in range(RESTARTS):
        labels = KMeans(groups, n_init=1, random_state=seed).fit(c, sample_weight=w).labels_
        for _ in range(MAX_ITERATIONS):
            sums = np.zeros((groups, c.shape[1]))
            np.add.at(sums, labels, c * w[:, None])
            centres = normalized(sums + 1e-12)
            moved = (c @ centres.T).argmax(axis=1)
            if (moved == labels).all():
                break
            labels = moved
        inertia = float((w * (1 - (c * centres[labels]).sum(axis=1))).sum())
        if best is None or inertia < best[0]:
            best = (inertia, labels.astype(np.int64))
    assert best is not None
    out = np.empty(len(names), dtype=np.int64)
    out[order] = best[1]
    return out


def chunk_centres(
    x: Matrix, chunk_group: NDArray[np.int64], groups: int
) -> tuple[Matrix, NDArray[np.float32]]:
    """Each group's centre (the normalised mean of its chunks) and each chunk's cosine to
    its group's centre (0 for a chunk in no group, ``chunk_group`` -1). The sums are a
    sparse one-hot product and the cosines are read in blocks: no copy of ``x``."""
    inside = np.flatnonzero(chunk_group >= 0)
    ones = np.ones(len(inside), dtype=np.float32)
    one_hot = csr_matrix((ones, (chunk_group[inside], inside)), shape=(groups, len(x)))
    centres = normalized(np.asarray(one_hot @ x))
    sims = np.zeros(len(x), dtype=np.float32)
    for start in range(0, len(x), 16384):
        block = x[start : start + 16384] @ centres.T
        own = chunk_group[start : start + 16384]
        picked = block[np.arange(len(block)), np.maximum(own, 0)]
        sims[start : start + 16384] = np.where(own >= 0, picked, 0.0)
    return centres, sims
