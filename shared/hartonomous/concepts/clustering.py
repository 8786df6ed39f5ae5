"""Spherical k-means over embeddings: seeding, restarts, refinement, and the choice of k.

Why this shape (measured on the dev VM, 100k x 384 float32, k = 20): scikit-learn's
``KMeans`` (Lloyd) took 2.6 s for one start and 7.9 s for three, ``MiniBatchKMeans`` 0.4 s
a start on a quiet machine and 1.5-6 s when another process keeps the cores busy (its
thread pools spin; ``bench/concepts.py --threads``). So each restart
is a mini-batch fit from its own k-means++ seeding (on cosine geometry: the rows are
unit vectors) on a sample of at most ``RESTART_SAMPLE`` rows (at 100k x 384, k = 30: 2.7 s
for the whole call instead of 3.7, with inertia as low or lower in 2 of 3 seeds), the restart
with the least inertia over all rows wins, and a few full
iterations of *spherical* Lloyd (assign by cosine, centroid = normalised mean: Dhillon and
Modha 2001, which scikit-learn does not have) settle it on every row. The refinement is what
makes runs with different seeds agree: mini-batch centres wander by a batch's noise, a full
pass does not.

k is given, or chosen by the mean cosine silhouette over a sample (Rousseeuw 1987), highest
wins, over a grid of candidates: the textbook criterion that needs no labels and no
distribution assumption.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from scipy.sparse import csr_matrix
from sklearn.cluster import MiniBatchKMeans
from sklearn.metrics import silhouette_score

Matrix = NDArray[np.float32]

RESTARTS = 4
REFINE_ITERATIONS = 15
BATCH_SIZE = 4096
SILHOUETTE_SAMPLE = 3000  # rows the silhouette is computed on (it is quadratic in them)
K_FIT_SAMPLE = 20000  # rows each candidate k is fitted on while choosing k
RESTART_SAMPLE = 20000  # rows each restart is fitted on (refinement then uses every row)
WARM_MARGIN = 0.01  # a re-run's cold solution must beat the warm one's inertia by 1%
MIN_PER_CONCEPT = 5  # a concept of fewer members is noise: k is bounded by n / this
K_CANDIDATES = (2, 3, 4, 5, 6, 8, 10, 12, 14, 16, 20, 24, 28, 32, 40, 48, 56, 64)


@dataclass(frozen=True)
class Clustering:
    labels: NDArray[np.int64]  # a cluster per row, 0..k-1, clusters ordered by size (desc)
    centroids: Matrix  # k x d, unit length
    similarity: NDArray[np.float32]  # each row's cosine to its centroid
    inertia: float  # sum of (1 - cosine) over rows: what the restarts minimise


def normalized(x: NDArray[np.floating]) -> Matrix:
    """Rows scaled to unit length (a zero row stays zero)."""
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    out: Matrix = np.divide(x, norms, out=np.zeros_like(x), where=norms > 0)
    return out


def assign(x: Matrix, centroids: Matrix) -> tuple[NDArray[np.int64], NDArray[np.float32]]:
    """Nearest centroid by cosine for unit rows, and that cosine; in blocks (flat memory)."""
    labels = np.empty(len(x), dtype=np.int64)
    sims = np.empty(len(x), dtype=np.float32)
    for start in range(0, len(x), 16384):
        block = x[start : start + 16384] @ centroids.T
        labels[start : start + 16384] = block.argmax(axis=1)
        sims[start : start + 16384] = block.max(axis=1)
    return labels, sims


def warm_or_cold(x: Matrix, k: int, previous: Matrix, seed: int = 0) -> tuple[Clustering, str]:
    """A re-run: refine from the live concepts' centroids (``previous``, largest first; the
    cold solution's centroids farthest from them fill up to ``k``), and keep that unless the
    cold restarts beat its inertia by more than ``WARM_MARGIN``. Users refitting on a
    schedule want old documents to keep their concepts; a cold start with another seed lands
    on another local optimum of near-equal inertia about as often as not."""
    cold = spherical_kmeans(x, k, seed=seed)
    init = previous[:k]
    if len(init) < k:
        far = np.argsort((cold.centroids @ init.T).max(axis=1), kind="stable")
        init = np.vstack([init, cold.centroids[far[: k - len(init)]]])
    warm = refine(x, normalized(init))
    if warm.inertia <= cold.inertia * (1 + WARM_MARGIN):
        return warm, "warm"
    return cold, "cold"


def spherical_kmeans(x: Matrix, k: int, seed: int = 0, restarts: int = RESTARTS) -> Clustering:
    """Cluster unit rows ``x`` into ``k`` groups (see the module docstring)."""
    if not 1 <= k <= len(x):
        raise ValueError(f"k={k} needs 1 <= k <= {len(x)} rows")
    best: tuple[float, Matrix] | None = None
    rows = x
    if len(x) > RESTART_SAMPLE:
        rng = np.random.default_rng(seed)
        rows = x[np.sort(rng.choice(len(x), RESTART_SAMPLE, replace=False))]
    for restart in range(restarts):
        fit = MiniBatchKMeans(
            n_clusters=k,
            init="k-means++",
            n_init=1,
            batch_size=min(BATCH_SIZE, len(rows)),
            random_state=seed * 1000 + restart,
        ).fit(rows)
        centres = normalized(fit.cluster_centers_)
        _, sims = assign(x, centres)
        inertia = float((1.0 - sims).sum())
        if best is None or inertia < best[0]:
            best = (inertia, centres)
    assert best is not None
    return refine(x, best[1])


def refine(x: Matrix, centroids: Matrix, iterations: int = REFINE_ITERATIONS) -> Clustering:
    """Spherical Lloyd from ``centroids`` until no row moves (or ``iterations``); an emptied
    cluster keeps its centroid. Clusters are then numbered by size, largest first, so equal
    partitions number alike."""
    k = len(centroids)
    labels, sims = assign(x, centroids)
    rows = np.arange(len(x))
    ones = np.ones(len(x), dtype=np.float32)
    for _ in range(iterations):
        # Sums per cluster as a sparse one-hot product: np.add.at took 0.86 s a call at 100k
        # x 384, this 0.05 s (bench/concepts.py).
        sums = np.asarray(csr_matrix((ones, (labels, rows)), shape=(k, len(x))) @ x)
        counts = np.bincount(labels, minlength=k)
        moved = normalized(sums)
        centroids = np.where(counts[:, None] > 0, moved, centroids).astype(np.float32)
        new_labels, sims = assign(x, centroids)
        stable = bool((new_labels == labels).all())
        labels = new_labels
        if stable:
            break
    counts = np.bincount(labels, minlength=k)
    order = np.lexsort((np.arange(k), -counts))  # by size, ties by index
    rank = np.empty(k, dtype=np.int64)
    rank[order] = np.arange(k)
    return Clustering(
        labels=rank[labels],
        centroids=centroids[order],
        similarity=sims,
        inertia=float((1.0 - sims).sum()),
    )


def k_bounds(n: int) -> tuple[int, int]:
    """The k that ``n`` rows allow: 2 up to ``n // MIN_PER_CONCEPT``."""
    return 2, max(2, n // MIN_PER_CONCEPT)


def choose_k(x: Matrix, k_max: int, seed: int = 0) -> tuple[int, dict[int, float]]:
    """The candidate k (<= ``k_max``) with the highest cosine silhouette, and every score."""
    rng = np.random.default_rng(seed)
    fit_rows = x if len(x) <= K_FIT_SAMPLE else x[rng.choice(len(x), K_FIT_SAMPLE, replace=False)]
    sample = rng.choice(len(fit_rows), min(SILHOUETTE_SAMPLE, len(fit_rows)), replace=False)
    upper = min(k_max, k_bounds(len(x))[1])
    scores: dict[int, float] = {}
    for k in [c for c in K_CANDIDATES if c <= upper] or [2]:
        fit = spherical_kmeans(fit_rows, k, seed=seed, restarts=1)
        labels = fit.labels[sample]
        if len(np.unique(labels)) < 2:
            continue
        scores[k] = float(silhouette_score(fit_rows[sample], labels, metric="cosine"))
    if not scores:
        return 2, scores
    return max(scores, key=lambda k: (scores[k], -k)), scores
