"""Binding concepts by co-occurrence: IS_A by subsumption, RELATED otherwise.

A *window* is a set of concepts seen together: the concepts of one document's chunks, or of
the chunks one generation's receipt used. With ``n(x)`` the windows holding ``x`` and
``n(x, y)`` those holding both, Sanderson and Croft (SIGIR 1999) let ``x`` subsume ``y`` when
``P(x|y) = n(x, y) / n(y) >= 0.8`` and ``P(y|x) < 1``. Their second test admits pairs that
nearly always co-occur both ways (0.95 and 0.9), which are siblings, not parent and child; we
ask instead that the reverse stays under the same 0.8 (``IS_A_MIN``), so ``y IS_A x`` says
"``y`` is mostly found inside ``x``, and not the reverse"; and that ``x`` be at least
``IS_A_MIN_LIFT`` times likelier beside ``y`` than in any window (a concept present
everywhere, boilerplate, would otherwise be everyone's parent). The lift counts windows that
name too many concepts too. Pairs that co-occur but fail that
test are ``RELATED`` when the Ochiai coefficient ``n(x, y) / sqrt(n(x) n(y))`` (the cosine of
their occurrence vectors) is at least ``RELATED_MIN``. A pair needs ``MIN_SUPPORT`` shared
windows either way: two coincidences are not evidence. The confidence is ``P(x|y)`` for IS_A
and the Ochiai coefficient for RELATED.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from itertools import combinations
from typing import Any

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


def bind(windows: Iterable[Window]) -> list[Binding]:
    """The IS_A and RELATED edges the windows support, in a stable order."""
    single: Counter[str] = Counter()
    pairs: Counter[tuple[str, str]] = Counter()
    by_kind: Counter[tuple[str, str, str]] = Counter()
    kinds: Counter[str] = Counter()
    for window in windows:
        kinds[window.kind] += 1
        if len(window.concepts) > MAX_WINDOW_CONCEPTS:
            continue
        single.update(window.concepts)
        for x, y in combinations(sorted(window.concepts), 2):
            pairs[(x, y)] += 1
            by_kind[(x, y, window.kind)] += 1
    total = sum(kinds.values())
    out = []
    for (x, y), both in sorted(pairs.items()):
        if both < MIN_SUPPORT:
            continue
        p_x_given_y, p_y_given_x = both / single[y], both / single[x]
        evidence: dict[str, Any] = {
            "together": both,
            "windows": {kind: by_kind[(x, y, kind)] for kind in sorted(kinds)},
            "occurrences": {x: single[x], y: single[y]},
            "windows_counted": dict(sorted(kinds.items())),
        }
        lift_x, lift_y = p_x_given_y * total / single[x], p_y_given_x * total / single[y]
        if p_x_given_y >= IS_A_MIN and p_y_given_x < IS_A_MIN and lift_x >= IS_A_MIN_LIFT:
            out.append(Binding(y, IS_A, x, round(p_x_given_y, 6), evidence))
        elif p_y_given_x >= IS_A_MIN and p_x_given_y < IS_A_MIN and lift_y >= IS_A_MIN_LIFT:
            out.append(Binding(x, IS_A, y, round(p_y_given_x, 6), evidence))
        else:
            ochiai = both / math.sqrt(single[x] * single[y])
            if ochiai >= RELATED_MIN:
                out.append(Binding(x, RELATED, y, round(ochiai, 6), evidence))
    return out
