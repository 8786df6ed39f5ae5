"""Ports: the small Protocols the core needs from the outside world.

Adapters live in ``blobs/`` and ``store/``; ``bootstrap.py`` is the one place that picks them.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import Protocol


class StagedBlob(Protocol):
    """Bytes fully written and hashed but not yet visible under their sha256."""

    @property
    def sha256(self) -> str: ...

    @property
    def size(self) -> int: ...

    def persist(self) -> None:
        """Make the staged bytes durable (fsync) now, outside any lock; ``publish`` does it
        otherwise. Callers skip it for bytes already held: those are only discarded."""

    def publish(self) -> None:
        """Make the bytes readable under ``sha256``; a no-op when they already are."""

    def discard(self) -> None:
        """Forget the staged bytes; safe to call twice or after ``publish``."""


class BlobWriter(Protocol):
    """A streaming write: bytes in, SHA-256 computed on the way, flat memory."""

    def write(self, data: bytes | bytearray | memoryview) -> None: ...

    def finish(self) -> StagedBlob: ...

    def abort(self) -> None: ...


class BlobStore(Protocol):
    """Content-addressed bytes: the key is the SHA-256 of the content, nothing else."""

    def writer(self) -> BlobWriter: ...

    def exists(self, sha256: str) -> bool: ...

    def read(self, sha256: str, start: int = 0, end: int | None = None) -> Iterator[bytes]:
        """Yield bytes ``[start, end)`` (``end=None``: to the end) in bounded chunks."""
        ...

    def delete(self, sha256: str) -> None:
        """Remove the bytes; no error when they are already gone."""

    def sweep_staging(self, before: datetime) -> int:
        """Delete staged writes last touched before ``before`` (left by crashed uploads)."""
        ...
