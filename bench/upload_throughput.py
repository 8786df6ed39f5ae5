"""Upload a large body through the HTTP API and report the server's peak RSS and throughput.

Starts ``hartonomous serve`` on loopback with a fresh store for each path measured, streams
SIZE bytes from this process (1 MiB chunks, never held whole), and reads the server's peak
resident set (``VmHWM`` in /proc) when it is done. Goal: peak RSS under 200 MiB for 2 GiB.

* direct: one request, ``POST /v1/atoms`` (raw body, or ``--multipart``);
* ``--session``: also the upload-session path, ``POST /v1/uploads`` -> the bytes to its
  ``url`` (the app's own PUT on the local folder; the SAS URL, through azure-storage-blob's
  blocks, on Azurite) -> ``POST /v1/uploads/{id}/complete``, in the same run.

``--blob-backend azurite`` starts Azurite from node_modules (``npm ci``) as the tests do and
points the server at it.

    python bench/upload_throughput.py [--size-gib 2] [--multipart] [--session]
                                      [--blob-backend local|azurite]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, cast

import httpx
from _server import BIN, free_port, serving

MiB = 1024 * 1024
ROOT = Path(__file__).resolve().parent.parent
AZURITE = ROOT / "node_modules" / ".bin" / "azurite-blob"
# Azurite's well-known development account (public, documented by Microsoft).
DEV_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
TIMEOUT = httpx.Timeout(60.0, read=1800.0, write=600.0)


def proc_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def body(total: int, digest: Any) -> Iterator[bytes]:
    block = bytearray(os.urandom(MiB))
    sent = 0
    while sent < total:
        n = min(MiB, total - sent)
        block[:8] = sent.to_bytes(8, "little")  # every chunk differs
        chunk = bytes(block[:n])
        digest.update(chunk)
        sent += n
        yield chunk


@dataclass
class Run:
    label: str
    idle_kib: int
    peak_kib: int
    elapsed: float
    phases: dict[str, float]


@contextmanager
def azurite(folder: Path) -> Iterator[str]:
    """A private Azurite blob service; its connection string."""
    if not AZURITE.exists():
        sys.exit(f"{AZURITE} is missing: run `npm ci` in {ROOT}")
    port = free_port()
    args = [str(AZURITE), "--blobHost", "127.0.0.1", "--blobPort", str(port)]
    args += ["--location", str(folder), "--skipApiVersionCheck", "--disableTelemetry"]
    proc = subprocess.Popen(
        [*args, "--silent", "--loose"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        for _ in range(300):
            try:
                httpx.get(f"http://127.0.0.1:{port}/")
                break
            except httpx.TransportError:
                time.sleep(0.1)
        yield (
            "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;"
            f"AccountKey={DEV_KEY};BlobEndpoint=http://127.0.0.1:{port}/devstoreaccount1;"
        )
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def direct(
    client: httpx.Client, url: str, size: int, multipart: bool
) -> tuple[dict[str, Any], str]:
    digest = hashlib.sha256()
    if multipart:
        stream = cast(IO[bytes], _Reader(body(size, digest)))
        files = {"file": ("bench.bin", stream, "application/octet-stream")}
        response = client.post(f"{url}/v1/atoms", files=files)
    else:
        headers = {"Content-Type": "application/octet-stream", "Content-Length": str(size)}
        response = client.post(f"{url}/v1/atoms", headers=headers, content=body(size, digest))
    response.raise_for_status()
    return response.json(), digest.hexdigest()


def session(
    client: httpx.Client, url: str, size: int, phases: dict[str, float]
) -> tuple[dict[str, Any], str]:
    digest = hashlib.sha256()
    start = time.perf_counter()
    opened = client.post(f"{url}/v1/uploads", json={"size": size})
    opened.raise_for_status()
    target = opened.json()
    if "x-ms-blob-type" in target["headers"]:  # a SAS URL: blocks, as the CLI sends them
        from azure.storage.blob import BlobClient

        blob = BlobClient.from_blob_url(target["url"], max_block_size=8 * MiB)
        reader = cast(IO[bytes], _Reader(body(size, digest)))
        blob.upload_blob(reader, length=size, overwrite=True, max_concurrency=4)
    else:
        sent = httpx.request(
            target["method"],
            target["url"],
            headers={**target["headers"], "Content-Length": str(size)},
            content=body(size, digest),
            timeout=TIMEOUT,
        )
        sent.raise_for_status()
    phases["send"] = time.perf_counter() - start
    start = time.perf_counter()
    done = client.post(f"{url}/v1/uploads/{target['upload_id']}/complete")
    done.raise_for_status()
    phases["complete"] = time.perf_counter() - start
    return done.json(), digest.hexdigest()


def measure(label: str, env: dict[str, str], size: int, how: Any) -> Run:
    with tempfile.TemporaryDirectory(prefix="hartonomous-bench-") as tmp:
        data_dir = Path(tmp) / "store"
        create = [str(BIN), "tenant", "create", "bench", "--data-dir", str(data_dir)]
        key = subprocess.run(create, capture_output=True, text=True, check=True, env=env)
        secret = key.stdout.strip().splitlines()[-1]
        with serving(data_dir, env) as (url, pid):
            idle_kib = proc_kib(pid, "VmRSS")
            phases: dict[str, float] = {}
            headers = {"Authorization": f"Bearer {secret}"}
            start = time.perf_counter()
            with httpx.Client(timeout=TIMEOUT, headers=headers) as client:
                atom, sha = how(client, url, phases)
            elapsed = time.perf_counter() - start
            assert atom["sha256"] == sha, "server hash differs from the client's"
            assert atom["size"] == size
            return Run(label, idle_kib, proc_kib(pid, "VmHWM"), elapsed, phases)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--size-gib", type=float, default=2.0)
    parser.add_argument("--multipart", action="store_true", help="send multipart/form-data")
    parser.add_argument("--session", action="store_true", help="also the upload-session path")
    parser.add_argument("--blob-backend", choices=["local", "azurite"], default="local")
    args = parser.parse_args()
    size = int(args.size_gib * 1024 * MiB)
    env = {**os.environ, "HARTONOMOUS_MAX_UPLOAD_BYTES": str(size + MiB)}
    runs: list[Run] = []
    with ExitStack() as stack:
        if args.blob_backend == "azurite":
            blobs = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="azurite-")))
            env |= {
                "HARTONOMOUS_BLOB_BACKEND": "azure",
                "HARTONOMOUS_AZURE_STORAGE_CONNECTION_STRING": stack.enter_context(azurite(blobs)),
            }
        mode = "multipart" if args.multipart else "raw body"
        runs.append(
            measure(
                f"POST /v1/atoms ({mode})",
                {**env, "HARTONOMOUS_BLOB_CONTAINER": "direct"},
                size,
                lambda c, u, _p: direct(c, u, size, args.multipart),
            )
        )
        if args.session:
            runs.append(
                measure(
                    "upload session (POST /v1/uploads, send, complete)",
                    {**env, "HARTONOMOUS_BLOB_CONTAINER": "session"},
                    size,
                    lambda c, u, p: session(c, u, size, p),
                )
            )

    print(f"upload of {size / (1024 * MiB):.2f} GiB on loopback, blobs on {args.blob_backend}")
    for run in runs:
        print(f"  {run.label}")
        print(f"    server RSS idle            {run.idle_kib / 1024:8.1f} MiB")
        print(f"    server peak RSS (VmHWM)    {run.peak_kib / 1024:8.1f} MiB   goal < 200 MiB")
        print(f"    elapsed                    {run.elapsed:8.2f} s")
        print(f"    throughput                 {size / MiB / run.elapsed:8.1f} MiB/s")
        for phase, seconds in run.phases.items():
            print(f"      {phase:<24} {seconds:8.2f} s  ({size / MiB / seconds:.1f} MiB/s)")


class _Reader:
    """A file-like view of a generator, so clients stream it as a file."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = chunks
        self._buffer = b""

    def read(self, n: int = -1) -> bytes:
        while n < 0 or len(self._buffer) < n:
            try:
                self._buffer += next(self._chunks)
            except StopIteration:
                break
        if n < 0:
            out, self._buffer = self._buffer, b""
        else:
            out, self._buffer = self._buffer[:n], self._buffer[n:]
        return out


if __name__ == "__main__":
    main()
