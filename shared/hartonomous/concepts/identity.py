"""Keeping concept ids across runs: Hungarian matching on centroids, then lineage.

A re-run's clusters are matched one to one with the live concepts by the assignment that
maximises the summed cosine of their centroids (``scipy.optimize.linear_sum_assignment``); a
pair keeps the old id when its cosine is at least ``MATCH_MIN_COSINE``. What is left is read
from the members: a new cluster most of whose members (``LINEAGE_MIN_SHARE``) sat in one old
concept is that concept's split (``SPLIT_FROM``); an old concept most of whose members went
into one new cluster merged into it (``MERGED_INTO``). Unmatched old concepts retire.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

import numpy as np
from scipy.optimize import linear_sum_assignment

from hartonomous.concepts.clustering import Matrix

MATCH_MIN_COSINE = 0.8
LINEAGE_MIN_SHARE = 0.5
K = TypeVar("K")
SPLIT_FROM = "SPLIT_FROM"
MERGED_INTO = "MERGED_INTO"


@dataclass(frozen=True)
class Lineage:
    src_id: str  # the new concept (SPLIT_FROM) or the retired one (MERGED_INTO)
    kind: str
    dst_id: str
    share: float  # the members' share that decided it


@dataclass(frozen=True)
class Identities:
    ids: list[str]  # the concept id of each new cluster, in cluster order
    kept: set[str]  # ids carried over from the previous run
    retired: list[str]  # previous ids no cluster took
    lineage: list[Lineage] = field(default_factory=list)


def match(
    old_ids: Sequence[str],
    old_centroids: Matrix,
    new_centroids: Matrix,
    old_members: Mapping[str, str],
    new_members: Mapping[str, int],
    fresh_id: Callable[[], str],
) -> Identities:
    """Ids for the new clusters. ``old_members``: atom id -> old concept id;
    ``new_members``: atom id -> new cluster index."""
    k = len(new_centroids)
    ids: list[str | None] = [None] * k
    kept: set[str] = set()
    if len(old_ids):
        sims = old_centroids @ new_centroids.T
        rows, cols = linear_sum_assignment(sims, maximize=True)
        for i, j in zip(rows, cols, strict=True):
            if sims[i, j] >= MATCH_MIN_COSINE:
                ids[j] = old_ids[i]
                kept.add(old_ids[i])
    overlap: dict[tuple[str, int], int] = {}
    for atom_id, cluster in new_members.items():
        before = old_members.get(atom_id)
        if before is not None:
            overlap[(before, cluster)] = overlap.get((before, cluster), 0) + 1
    new_sizes = np.bincount(np.fromiter(new_members.values(), dtype=np.int64), minlength=k)
    old_sizes: dict[str, int] = {}
    for before in old_members.values():
        old_sizes[before] = old_sizes.get(before, 0) + 1
    lineage: list[Lineage] = []
    for j in range(k):
        if ids[j] is not None:
            continue
        made = ids[j] = fresh_id()
        source = _largest({old: n for (old, c), n in overlap.items() if c == j})
        if source and new_sizes[j] and source[1] / new_sizes[j] >= LINEAGE_MIN_SHARE:
            lineage.append(Lineage(made, SPLIT_FROM, source[0], source[1] / new_sizes[j]))
    final = [i for i in ids if i is not None]
    retired = [old for old in old_ids if old not in kept]
    for old in retired:
        target = _largest({c: n for (o, c), n in overlap.items() if o == old})
        size = old_sizes.get(old, 0)
        if target and size and target[1] / size >= LINEAGE_MIN_SHARE:
            lineage.append(Lineage(old, MERGED_INTO, final[target[0]], target[1] / size))
    return Identities(final, kept, retired, lineage)


def _largest(counts: Mapping[K, int]) -> tuple[K, int] | None:
    if not counts:
        return None
    key = max(counts, key=lambda c: (counts[c], str(c)))
    return key, counts[key]
