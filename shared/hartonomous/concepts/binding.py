"""Binding concepts by co-occurrence: IS_A by subsumption, RELATED otherwise.

A *window* is a set of concepts seen together: the concepts of one document's chunks, or of
the chunks one generation's receipt used. With ``n(x)`` the windows holding ``x`` and
``n(x, y)`` those holding both, Sanderson and Croft (SIGIR 1999) let ``x`` subsume ``y`` when
``P(x|y) = n(x, y) / n(y) >= 0.8`` and ``P(y|x) < 1``. Their second test admits pairs that
nearly always co-occur both ways (0.95 and 0.9), which are siblings, not parent and child; we
ask instead that the reverse stays under the same 0.8 (``IS_A_MIN``), so ``x`` subsuming ``y``
says "``y`` is mostly found inside ``x``, and not the reverse"; and that ``x`` be at least
``IS_A_MIN_LIFT`` times likelier beside ``y`` than in any window (a concept present
everywhere, boilerplate, would otherwise be everyone's parent). The lift counts windows that
name too many concepts too.

Subsumption says where a concept is found, not what it is about: over one flat clustering a
narrow topic is found inside its broader topic and just as much inside whatever that topic's
documents carry beside it (parameter boilerplate, a neighbouring subject); such parents were
right in 26 of 57 held-out pairs (docs/concepts.md). So parents come from one level up: a
run groups its concepts (grouping.py) into broad concepts, a window that holds a concept
holds its group too, and ``y IS_A x`` only where ``x`` is a broad concept that subsumes the
concept ``y``; of several, the one whose centroid is nearest ``y``'s (highest cosine, ties by
id). Its own group holds all of ``y``'s windows, so what the test decides is whether the
group is more than ``y`` (the reverse test) and specific (the lift). Pairs of one level that
co-occur are ``RELATED`` when the Ochiai coefficient ``n(x, y) / sqrt(n(x) n(y))`` (the
cosine of their occurrence vectors) is at least ``RELATED_MIN``. A pair needs
``MIN_SUPPORT`` shared windows either way: two coincidences are not evidence. The confidence
is ``P(x|y)`` for IS_A and the Ochiai coefficient for RELATED; each edge's evidence holds the
centroids' cosine.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from itertools import combinations
from typing import Any

import numpy as np

IS_A = "IS_A"
RELATED = "RELATED"
IS_A_MIN = 0.8
# A parent must be much likelier beside the child than anywhere (lift = P(x|y) / P(x)): on
# 111 READMEs every wrong IS_A at the thresholds above had as parent a concept of
# boilerplate (badges, pip install, links) found in a third of the windows, lift 2.1-3.1;
# the right ones had lift 13.9 and 17.8 (bench/concepts.py).
IS_A_MIN_LIFT = 4.0
RELATED_MIN = 0.2
MIN_SUPPORT = 3
MAX_WINDOW_CONCEPTS = 64  # a window naming more concepts than this says nothing specific
COSINE_DECIMALS = 4  # in the evidence: a re-run on unchanged data writes the same edges


@dataclass(frozen=True)
class Window:
    kind: str  # document | receipt
    concepts: frozenset[str]


@dataclass(frozen=True)
class Binding:
    src_id: str  # IS_A: the narrower concept; RELATED: the smaller id of the two
    kind: str
    dst_id: str
    confidence: float
    evidence: dict[str, Any]


@dataclass(frozen=True)
class _Pair:
    x: str  # x < y
    y: str
    both: int
    evidence: dict[str, Any]


def bind(
    windows: Iterable[Window],
    centroids: Mapping[str, np.ndarray],
    broader: Mapping[str, str] | None = None,
) -> list[Binding]:
    """The IS_A and RELATED edges the windows support, in a stable order. ``centroids``
    holds each concept's centroid (unit length), broad ones too; ``broader`` maps a concept
    to its group's broad concept, which joins every window the concept is in."""
    broader = broader or {}
    broad = set(broader.values())
    single: Counter[str] = Counter()
    pairs: Counter[tuple[str, str]] = Counter()
    by_kind: Counter[tuple[str, str, str]] = Counter()
    kinds: Counter[str] = Counter()
    for window in windows:
        kinds[window.kind] += 1
        if len(window.concepts) > MAX_WINDOW_CONCEPTS:
            continue
        present = window.concepts | {broader[c] for c in window.concepts if c in broader}
        single.update(present)
        for x, y in combinations(sorted(present), 2):
            pairs[(x, y)] += 1
            by_kind[(x, y, window.kind)] += 1
    total = sum(kinds.values())
    subsumers: dict[str, list[tuple[float, str, _Pair]]] = {}  # child -> (cosine, parent, pair)
    candidates: list[_Pair] = []
    for (x, y), both in sorted(pairs.items()):
        if both < MIN_SUPPORT:
            continue
        cosine = round(float(np.dot(centroids[x], centroids[y])), COSINE_DECIMALS)
        pair = _Pair(x, y, both, {
            "together": both,
            "windows": {kind: by_kind[(x, y, kind)] for kind in sorted(kinds)},
            "occurrences": {x: single[x], y: single[y]},
            "windows_counted": dict(sorted(kinds.items())),
            "centroid_cosine": cosine,
        })  # fmt: skip
        if (x in broad) == (y in broad):
            candidates.append(pair)
            continue
        child, parent = (y, x) if x in broad else (x, y)
        if _subsumes(single[parent], single[child], both, total):
            subsumers.setdefault(child, []).append((cosine, parent, pair))
    # The nearest subsumer is the parent; ties break by id, so the choice is reproducible.
    out = []
    for child, found in sorted(subsumers.items()):
        _, parent, pair = min(found, key=lambda f: (-f[0], f[1]))
        out.append(Binding(child, IS_A, parent, round(pair.both / single[child], 6),
                           pair.evidence))  # fmt: skip
    for pair in candidates:
        ochiai = pair.both / math.sqrt(single[pair.x] * single[pair.y])
        if ochiai >= RELATED_MIN:
            out.append(Binding(pair.x, RELATED, pair.y, round(ochiai, 6), pair.evidence))
    return out


def _subsumes(n_parent: int, n_child: int, both: int, total: int) -> bool:
    """``parent`` holds ``child``'s windows (P(parent|child) >= IS_A_MIN), not the reverse,
    and is much likelier beside it than anywhere (lift)."""
    p_parent, p_child = both / n_child, both / n_parent
    lift = p_parent * total / n_parent
    return p_parent >= IS_A_MIN and p_child < IS_A_MIN and lift >= IS_A_MIN_LIFT
