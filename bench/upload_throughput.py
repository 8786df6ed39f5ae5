"""Upload a large body through the HTTP API and report the server's peak RSS and throughput.

Starts ``hartonomous serve`` on loopback with a fresh store, streams SIZE bytes to
``POST /v1/atoms`` from this process (1 MiB chunks, never held whole), and reads the server's
peak resident set (``VmHWM`` in /proc) when it is done. Goal: peak RSS under 200 MB for 2 GiB.

    python bench/upload_throughput.py [--size-gib 2] [--multipart]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, cast

import httpx
from _server import BIN, serving

MiB = 1024 * 1024


def proc_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def body(total: int, digest: hashlib._Hash) -> Iterator[bytes]:
    block = bytearray(os.urandom(MiB))
    sent = 0
    while sent < total:
        n = min(MiB, total - sent)
        block[:8] = sent.to_bytes(8, "little")  # every chunk differs
        chunk = bytes(block[:n])
        digest.update(chunk)
        sent += n
        yield chunk


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-gib", type=float, default=2.0)
    parser.add_argument("--multipart", action="store_true", help="send multipart/form-data")
    args = parser.parse_args()
    size = int(args.size_gib * 1024 * MiB)

    with tempfile.TemporaryDirectory(prefix="hartonomous-bench-") as tmp:
        data_dir = Path(tmp) / "store"
        env = {**os.environ, "HARTONOMOUS_MAX_UPLOAD_BYTES": str(size + MiB)}
        key = (
            subprocess.run(
                [str(BIN), "tenant", "create", "bench", "--data-dir", str(data_dir)],
                capture_output=True,
                text=True,
                check=True,
                env=env,
            )
            .stdout.strip()
            .splitlines()[-1]
        )
        with serving(data_dir, env) as (url, pid):
            idle_kib = proc_kib(pid, "VmRSS")
            digest = hashlib.sha256()
            headers = {"Authorization": f"Bearer {key}"}
            timeout = httpx.Timeout(60.0, read=600.0, write=600.0)
            start = time.perf_counter()
            with httpx.Client(timeout=timeout) as client:
                if args.multipart:
                    response = client.post(
                        f"{url}/v1/atoms",
                        headers=headers,
                        files={
                            "file": (
                                "bench.bin",
                                cast(IO[bytes], _Reader(body(size, digest))),
                                "application/octet-stream",
                            )
                        },
                    )
                else:
                    headers |= {
                        "Content-Type": "application/octet-stream",
                        "Content-Length": str(size),
                    }
                    response = client.post(
                        f"{url}/v1/atoms", headers=headers, content=body(size, digest)
                    )
            elapsed = time.perf_counter() - start
            response.raise_for_status()
            atom = response.json()
            assert atom["sha256"] == digest.hexdigest(), "server hash differs from the client's"
            assert atom["size"] == size
            peak_kib = proc_kib(pid, "VmHWM")

    mode = "multipart" if args.multipart else "raw body"
    print(f"upload of {size / (1024 * MiB):.2f} GiB ({mode}) through POST /v1/atoms on loopback")
    print(f"  server RSS idle            {idle_kib / 1024:8.1f} MiB")
    print(f"  server peak RSS (VmHWM)    {peak_kib / 1024:8.1f} MiB   goal < 200 MB")
    print(f"  elapsed                    {elapsed:8.2f} s")
    print(f"  throughput                 {size / MiB / elapsed:8.1f} MiB/s")
    print(f"  sha256 verified            {atom['sha256'][:16]}...")


class _Reader:
    """A file-like view of a generator, so httpx streams the multipart file part."""

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
