"""Staging new atoms' bytes in the local blob store, one by one against together.

``AtomService.stage`` per blob (each pays its own fsyncs: the bytes, a journal entry under a
sync of ``journal/``, its fan-out folders, its name) against ``AtomService.stage_many`` (the
bytes of all, then every journal entry under one sync, then each folder synced once): a
generation's three atoms, a document's 50 or 200 chunks. Medians of ``--rounds`` rounds, one
way then the other, on a fresh store in a temporary folder (on the disk ``--dir`` names).

    python bench/staging.py [--rounds 6] [--dir /tmp]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from hartonomous.bootstrap import Platform, bootstrap  # noqa: E402
from hartonomous.settings import Settings  # noqa: E402


def staged_ms(p: Platform, datas: list[bytes], together: bool) -> float:
    started = time.perf_counter()
    staged = p.atoms.stage_many(datas) if together else [p.atoms.stage(d) for d in datas]
    elapsed = (time.perf_counter() - started) * 1000
    for blob in staged:
        blob.discard()
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--dir", type=Path, default=None, help="where the store's folder goes")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.dir) as folder:
        p = bootstrap(Settings(data_dir=Path(folder)))
        try:
            for count in (3, 50, 200):
                times: dict[bool, list[float]] = {False: [], True: []}
                for r in range(args.rounds):
                    for together in (False, True):
                        salt = f"{count}:{r}:{together}"
                        datas = [f"chunk {salt} {i} ".encode() * 20 for i in range(count)]
                        times[together].append(staged_ms(p, datas, together))
                one, many = (statistics.median(times[t]) for t in (False, True))
                print(f"{count:>4} new blobs: one by one {one:7.1f} ms, together {many:7.1f} ms "
                      f"({one / many:.1f}x)", flush=True)  # fmt: skip
        finally:
            p.close()


if __name__ == "__main__":
    main()
