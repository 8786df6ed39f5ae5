"""Admission decision latency (goal: p99 <= 1 ms in process): ``python -m
hartonomous.admission.bench [--decisions N] [--redis-url URL]``, or ``decision_latency()``
from bench/load.py. Real store (SQLite in a temp folder), real plan reads (cached as served)."""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from hartonomous.bootstrap import bootstrap
from hartonomous.services import tenants
from hartonomous.settings import Settings


def _percentiles(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)

    def pick(q: float) -> float:
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1e3

    return {"p50_ms": pick(0.50), "p99_ms": pick(0.99), "max_ms": ordered[-1] * 1e3}


def decision_latency(decisions: int = 10_000, redis_url: str | None = None) -> dict[str, object]:
    """Time ``admit_request`` and a generation permit (acquire, charge, release) for one
    tenant whose plan never refuses, ``decisions`` times each."""
    with tempfile.TemporaryDirectory() as folder:
        settings = Settings(data_dir=Path(folder), redis_url=redis_url,
                            plan_requests_per_second=100_000, plan_burst=1_000_000,
                            plan_tokens_per_minute=100_000_000)  # fmt: skip
        platform = bootstrap(settings)
        try:
            tenant, _ = tenants.create_tenant(platform.uow_factory, name="bench")
            admission = platform.admission
            admission.admit_request(tenant.id)  # the first plan read
            requests, generations = [], []
            for _ in range(decisions):
                start = time.perf_counter()
                admission.admit_request(tenant.id)
                requests.append(time.perf_counter() - start)
            for _ in range(decisions):
                start = time.perf_counter()
                with admission.generation(tenant.id) as permit:
                    permit.charge(1)
                generations.append(time.perf_counter() - start)
        finally:
            platform.close()
    return {
        "state": "redis" if redis_url else "in process",
        "decisions": decisions,
        "admit_request": _percentiles(requests),
        "generation_permit": _percentiles(generations),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--decisions", type=int, default=10_000)
    parser.add_argument("--redis-url", default=None)
    args = parser.parse_args()
    result = decision_latency(args.decisions, args.redis_url)
    for name in ("admit_request", "generation_permit"):
        figures = result[name]
        assert isinstance(figures, dict)
        print(f"{result['state']} {name}: " + " ".join(f"{k} {v:.3f}" for k, v in figures.items()))


if __name__ == "__main__":
    main()
