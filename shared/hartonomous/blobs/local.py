"""Blob store on a local folder: ``objects/ab/cd/<sha256>``, staged under ``staging/``.

A write goes to a private staging file while it is hashed, is fsynced (``persist``, or at
the latest on ``publish``; bytes already held are discarded without one), and becomes visible
only through an atomic ``os.replace`` onto its content address, so a reader never sees a
partial object and a crash leaves at most a stale staging file.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import BinaryIO

from hartonomous.blobs.hashing import READ_CHUNK, Digest, object_name


class LocalStagedBlob:
    def __init__(self, store: LocalBlobStore, path: Path, sha256: str, size: int) -> None:
        self._store, self._path = store, path
        self.sha256, self.size = sha256, size
        self._durable = False

    def persist(self) -> None:
        if not self._durable:
            fd = os.open(self._path, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
            self._durable = True

    def publish(self) -> None:
        final = self._store.path_for(self.sha256)
        if final.exists():
            self.discard()
            return
        self.persist()  # the bytes are on disk before their name is
        final.parent.mkdir(parents=True, exist_ok=True)
        self._path.replace(final)  # atomic on POSIX and Windows

    def discard(self) -> None:
        self._path.unlink(missing_ok=True)


class LocalBlobWriter:
    def __init__(self, store: LocalBlobStore) -> None:
        self._store = store
        self._path = store.staging / f"{uuid.uuid4().hex}.part"
        self._file: BinaryIO | None = self._path.open("xb")
        self._digest = Digest()

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self._file is None:
            raise RuntimeError("write after finish or abort")
        self._digest.update(data)
        self._file.write(data)

    def finish(self) -> LocalStagedBlob:
        if self._file is None:
            raise RuntimeError("finish after finish or abort")
        # No fsync yet: bytes that turn out to be held already are only discarded.
        self._file.flush()
        self._file.close()
        self._file = None
        return LocalStagedBlob(self._store, self._path, self._digest.hexdigest(), self._digest.size)

    def abort(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        self._path.unlink(missing_ok=True)


class LocalBlobStore:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.objects = root / "objects"
        self.staging = root / "staging"
        self.objects.mkdir(parents=True, exist_ok=True)
        self.staging.mkdir(parents=True, exist_ok=True)

    def path_for(self, sha256: str) -> Path:
        return self.objects / object_name(sha256)

    def writer(self) -> LocalBlobWriter:
        return LocalBlobWriter(self)

    def exists(self, sha256: str) -> bool:
        return self.path_for(sha256).is_file()

    def read(self, sha256: str, start: int = 0, end: int | None = None) -> Iterator[bytes]:
        with self.path_for(sha256).open("rb") as f:
            f.seek(start)
            remaining = None if end is None else end - start
            while remaining is None or remaining > 0:
                n = READ_CHUNK if remaining is None else min(READ_CHUNK, remaining)
                chunk = f.read(n)
                if not chunk:
                    return
                if remaining is not None:
                    remaining -= len(chunk)
                yield chunk

    def delete(self, sha256: str) -> None:
        self.path_for(sha256).unlink(missing_ok=True)

    def sweep_staging(self, before: datetime) -> int:
        cutoff = before.timestamp()
        removed = 0
        for path in self.staging.glob("*.part"):
            with contextlib.suppress(FileNotFoundError):  # finished or swept meanwhile
                if path.stat().st_mtime < cutoff:
                    path.unlink()
                    removed += 1
        return removed
