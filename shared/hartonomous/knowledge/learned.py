"""The learned associations search lifts by, held in process per (tenant, model).

Every search needs the tenant's associations of its embedding model (up to
``autonomy_max_associations``, 1,000 by default) as one matrix. Read and stacked per search
that cost 34 ms at 1,000; held here, a search reads only their version (count, newest
created_at) beside the duplicate links it reads anyway, and rereads the rows when it
changed: a change made by another process is seen by the next search. The least recently
searched tenants are dropped past ``MAX_TENANTS`` (1,000 x 384 float32 = 1.5 MB each).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from hartonomous.knowledge.associations import Association, SearchSignals, normalise_query

MAX_TENANTS = 32


@dataclass(frozen=True)
class Learned:
    version: tuple[str, str | None]
    associations: list[Association]
    matrix: npt.NDArray[np.float32]  # one query vector a row, in ``associations``' order
    normalised: list[str]  # each query, normalised (keyword mode lifts on it)


@dataclass
class LearnedCache:
    _held: OrderedDict[tuple[str, str], Learned] = field(default_factory=OrderedDict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def get(self, tenant_id: str, model: str) -> Learned | None:
        with self._lock:
            held = self._held.get((tenant_id, model))
            if held is not None:
                self._held.move_to_end((tenant_id, model))
            return held

    def put(self, tenant_id: str, model: str, signals: SearchSignals) -> Learned:
        """What ``signals`` read (its associations, not None) as the current copy."""
        found = signals.associations or []
        width = len(found[0].query_vector) // 4 if found else 0
        matrix = np.frombuffer(b"".join(a.query_vector for a in found), np.float32)
        held = Learned(
            signals.version,
            found,
            matrix.reshape(len(found), width),
            [normalise_query(a.query) for a in found],
        )
        with self._lock:
            self._held[(tenant_id, model)] = held
            self._held.move_to_end((tenant_id, model))
            while len(self._held) > MAX_TENANTS:
                self._held.popitem(last=False)
        return held
