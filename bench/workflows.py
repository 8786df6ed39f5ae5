"""Local Durable host throughput: a 1,000-activity fan-out and sequential chains.

Runs the diagnostics orchestrations of functions/ on the local host over a fresh SQLite
store, exactly as `hartonomous serve` would, and prints:

- fan-out: one orchestration fans out N no-op activities and fans in; activities per second
  end to end (start to Completed). Goal: at least 1,000/s.
- chains of 10, 100 and 1,000 sequential activities: total time each, to show how replay
  cost grows with history length. Goal: the 1,000-step chain under 30 s.

    python bench/workflows.py [--fan-out 1000] [--chains 10 100 1000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from functions import indexed_app  # noqa: E402
from hartonomous.store import migrate  # noqa: E402
from hartonomous.store.engine import create_engines  # noqa: E402
from hartonomous.workflows import diagnostics  # noqa: E402
from hartonomous.workflows.client import LocalDurableClient  # noqa: E402
from hartonomous.workflows.host import LocalDurableHost  # noqa: E402
from hartonomous.workflows.registry import Registry  # noqa: E402


def timed(host: LocalDurableHost, client: LocalDurableClient, name: str, count: int) -> float:
    start = time.perf_counter()
    instance_id = client.start_new_sync(name, client_input={"count": count})
    row = host.wait_for(instance_id, timeout=600)
    elapsed = time.perf_counter() - start
    if row.runtime_status != "Completed":
        raise SystemExit(f"{name} {count}: {row.runtime_status}: {row.error}")
    assert json.loads(row.output or "{}")["completed"] == count
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fan-out", type=int, default=1000)
    parser.add_argument("--chains", type=int, nargs="*", default=[10, 100, 1000])
    parser.add_argument("--repeat", type=int, default=3, help="fan-out runs (median reported)")
    parser.add_argument("--workers", type=int, default=8, help="activity threads")
    args = parser.parse_args()

    registry = Registry.from_functions(indexed_app().get_functions())
    with tempfile.TemporaryDirectory(prefix="hartonomous-wf-") as tmp:
        engines = create_engines(f"sqlite:///{Path(tmp) / 'bench.db'}")
        migrate.upgrade(engines)
        with LocalDurableHost(engines, registry, max_activity_workers=args.workers) as host:
            client = LocalDurableClient(host)
            timed(host, client, diagnostics.FAN_OUT, 10)  # warm up imports and caches
            fan = [
                timed(host, client, diagnostics.FAN_OUT, args.fan_out) for _ in range(args.repeat)
            ]
            chains = {n: timed(host, client, diagnostics.CHAIN, n) for n in args.chains}
        engines.dispose()

    median = statistics.median(fan)
    print(
        f"local Durable host, SQLite store, {args.workers} activity threads, {os.cpu_count()} cores"
    )
    print(
        f"  fan-out of {args.fan_out} no-op activities: median {median:.3f} s over {args.repeat}"
        f" runs -> {args.fan_out / median:,.0f} activities/s end to end   (goal >= 1,000/s)"
    )
    print("    runs: " + ", ".join(f"{t:.3f} s" for t in fan))
    for n, t in chains.items():
        per = t / n * 1000
        goal = "   (goal < 30 s)" if n == 1000 else ""
        print(f"  chain of {n:>5} activities: {t:8.2f} s  ({per:6.2f} ms per step){goal}")


if __name__ == "__main__":
    main()
