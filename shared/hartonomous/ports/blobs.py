"""Content-addressed bytes and the staging of upload sessions' bytes (``blobs/``)."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from datetime import datetime
from typing import Protocol


class StagedBlob(Protocol):
    """Bytes fully written and hashed, not yet referenced by any atom."""

    @property
    def sha256(self) -> str: ...

    @property
    def size(self) -> int: ...

    def persist(self) -> None:
        """Do the slow part of publishing now, outside any lock: journal the bytes and make
        them durable (the local folder also gives them their address here, so they may be
        readable before ``publish``; no atom references them yet). Callers skip it for bytes
        already held; ``publish`` persists them after all if they are gone by then (a sweep
        collected them)."""

    def publish(self) -> None:
        """Make the bytes readable under ``sha256``, durably, before returning (callers hold
        the write transaction that will reference them); cheap when they already are."""

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

    def persist_many(self, staged: Sequence[StagedBlob]) -> None:
        """``persist`` for several blobs of this store, sharing what syncs it can (one
        journal sync for a generation's atoms or a document's chunks, not one each)."""

    def sweep_staging(self, before: datetime) -> int:
        """Delete staged writes last touched before ``before`` (left by crashed uploads)."""
        ...

    def journaled(self, before: datetime) -> list[tuple[str, str]]:
        """``(entry, sha256)`` of the publication journal written before ``before``: bytes
        that may have been published by a transaction that then failed (staged blobs write
        an entry before new bytes can become visible; ``services/blob_lifecycle.py``)."""
        ...

    def unjournal(self, entry: str) -> None:
        """Drop a journal entry once its bytes are referenced or collected."""


class UploadTarget(Protocol):
    """Where a client sends an upload session's bytes: ``method`` to ``url`` with ``headers``."""

    @property
    def url(self) -> str: ...

    @property
    def method(self) -> str: ...

    @property
    def headers(self) -> dict[str, str]: ...


class StagingWriter(Protocol):
    """Bytes in, flat memory; ``finish`` makes them the session's received bytes (replacing
    earlier ones), ``abort`` leaves no trace of this write."""

    def write(self, data: bytes | bytearray | memoryview) -> None: ...

    def finish(self) -> None: ...

    def abort(self) -> None: ...


class UploadStaging(Protocol):
    """Where upload sessions' bytes wait between the client and completion, beside the blob
    store (same account or folder, so publishing them is a copy or a rename, never a
    re-upload). Adapters: ``blobs/upload_staging.py``."""

    def direct_target(
        self, tenant_id: str, upload_id: str, size: int, expires_at: datetime
    ) -> UploadTarget | None:
        """A URL that takes the bytes without this app (a SAS on Azure), or None."""

    def writer(self, tenant_id: str, upload_id: str) -> StagingWriter:
        """A streamed write of the session's bytes through the app."""

    def received(self, tenant_id: str, upload_id: str) -> int | None:
        """Size of the bytes received (or already sealed) for the session; None: none yet."""

    def seal(self, tenant_id: str, upload_id: str) -> StagedBlob | None:
        """Move the received bytes out of the client's reach (or take up a seal a crashed
        completion left) and hash them, streamed; publishing the result makes them an
        object of the blob store. None when there are no bytes."""

    def discard(self, tenant_id: str, upload_id: str) -> None:
        """Delete whatever bytes the session has, received or sealed."""

    def sweep(self, live: Callable[[Sequence[str]], set[str]], before: datetime) -> int:
        """Delete staged bytes of sessions ``live`` does not name, and writes through the app
        untouched since ``before`` (a crashed PUT); the number of objects deleted."""
