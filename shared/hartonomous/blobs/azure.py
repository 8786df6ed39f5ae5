"""Blob store on an Azure container: ``objects/ab/cd/<sha256>``, staged under ``staging/``.

Same contract as the local-folder store: the content address is only known once the last byte
has been hashed, so a write goes to a private staging blob ``staging/<uuid4hex>`` first.

* Writing: bytes are hashed as they pass and cut into blocks of ``block_size`` that are sent
  with Put Block (``stage_block``). Only one block is ever buffered, so memory stays flat
  whatever the blob's size. ``finish()`` commits the block list of the staging blob.
* Publishing: the staging blob is copied server-side (Copy Blob, ``start_copy_from_url``) to
  its content address with ``If-None-Match: *``, so an object that is already there is never
  overwritten, then the staging blob is deleted. Within one storage account Copy Blob needs no
  separate authorization of its source (the destination request's shared key, SAS or Entra
  identity covers it), unlike Put Blob/Block From URL, which need a SAS or token on the source.
* Never partially visible: Copy Blob may be asynchronous; while it is ``pending`` (or when it
  ended ``failed``/``aborted``) the destination blob exists but is incomplete. ``exists()`` and
  ``read()`` therefore treat any blob whose copy status is not ``success`` as absent, and a
  failed or timed-out copy's destination is deleted. A blob that was never a copy target has no
  copy status and counts as complete.

* Journal: before a copy can make new bytes visible, an empty ``journal/<sha>.<uuid>`` blob
  is written (by ``persist``, outside the write lock, or else by ``publish``), so bytes whose
  transaction then fails are found by ``services/blob_lifecycle.py``.

Azurite (3.35) accepts copy-from-URL with a shared-key source in the same account and completes
the copy synchronously (``copy_status`` is ``success`` in the response), so only real Azure takes
the polling path (bounded by ``copy_timeout``); the tests reach it by faking a pending status.
"""

from __future__ import annotations

import contextlib
import importlib
import re
import time
import uuid
from collections.abc import Iterator, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, cast

from azure.core import MatchConditions
from azure.core.exceptions import (
    HttpResponseError,
    ResourceExistsError,
    ResourceModifiedError,
    ResourceNotFoundError,
)
from azure.storage.blob import BlobBlock, BlobClient, ContainerClient

from hartonomous.blobs.hashing import READ_CHUNK, Digest, check_sha256, object_name

if TYPE_CHECKING:
    from hartonomous.ports import StagedBlob

MIB = 1024 * 1024
DEFAULT_BLOCK_SIZE = 8 * MIB
MAX_BLOCK_SIZE = 4000 * MIB  # Put Block's limit
MAX_BLOCKS = 50_000  # committed blocks per blob
STAGING_PREFIX = "staging/"
OBJECTS_PREFIX = "objects/"
JOURNAL_PREFIX = "journal/"
JOURNAL_REFRESH_S = 600.0  # publish re-journals bytes staged longer ago than this
_JOURNAL_ENTRY = re.compile(r"^([0-9a-f]{64})\.([0-9a-f]{32})$")
_MISSING = "missing"
_PUBLISH_ATTEMPTS = 3


def _copy_state(status: str | None) -> str:
    """A blob with no copy status was written directly, hence complete."""
    return "success" if not status else str(status)


class AzureStagedBlob:
    """A committed staging blob, hashed, waiting to be copied onto its content address."""

    def __init__(self, store: AzureBlobStore, blob: BlobClient, sha256: str, size: int) -> None:
        self._store, self._blob = store, blob
        self.sha256, self.size = sha256, size
        self._journaled_at: float | None = None

    def persist(self) -> None:
        """Committed blocks are durable already; only the journal entry is written."""
        at = self._journaled_at
        if at is None or time.monotonic() - at > JOURNAL_REFRESH_S:
            self._store.journal(self.sha256)
            self._journaled_at = time.monotonic()

    def publish(self) -> None:
        store = self._store
        dest = store.blob_for(self.sha256)
        for _ in range(_PUBLISH_ATTEMPTS):
            state = store.copy_state(dest)
            if state == "pending":  # a concurrent publish of the same bytes is under way
                state = store.wait_for_copy(dest)
            if state == "success":
                self.discard()
                return
            if state != _MISSING:  # a dead copy (failed/aborted): clear it and copy again
                store.delete_quietly(dest)
            self.persist()  # the journal entry exists before the copy can
            try:
                started = dest.start_copy_from_url(
                    self._blob.url, match_condition=MatchConditions.IfMissing
                )
            except (ResourceExistsError, ResourceModifiedError):
                continue  # someone else created it since we looked: inspect theirs
            state = _copy_state(cast("str | None", started.get("copy_status")))
            if state == "pending":
                try:
                    state = store.wait_for_copy(dest)
                except TimeoutError:
                    store.abort_copy_quietly(dest, cast("str | None", started.get("copy_id")))
                    raise
            if state == "success":
                self.discard()
                return
            store.delete_quietly(dest)
            raise RuntimeError(f"copy of staged blob to {self.sha256} ended {state!r}")
        raise RuntimeError(f"could not publish {self.sha256}: destination kept changing")

    def discard(self) -> None:
        self._store.delete_quietly(self._blob)


class AzureBlobWriter:
    """Streams into Put Block calls on a staging blob; buffers at most one block."""

    def __init__(self, store: AzureBlobStore, blob: BlobClient, block_size: int) -> None:
        self._store, self._blob, self._block_size = store, blob, block_size
        self._buf = bytearray()
        self._block_ids: list[str] = []
        self._digest = Digest()
        self._open = True
        self._committed = False

    def _stage(self, data: bytearray | memoryview) -> None:
        if len(self._block_ids) >= MAX_BLOCKS:
            raise ValueError(f"blob exceeds {MAX_BLOCKS} blocks of {self._block_size} bytes")
        self._store.ensure_container()
        block_id = f"{len(self._block_ids):06d}"  # all ids of a blob must have the same length
        # The SDK sends bytearray/memoryview bodies as they are (no copy); its hints say bytes.
        self._blob.stage_block(block_id, cast(bytes, data), length=len(data))
        self._block_ids.append(block_id)

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if not self._open:
            raise RuntimeError("write after finish, abort or a failed write")
        try:
            self._write(memoryview(data).cast("B"))
        except BaseException:
            # The digest may now cover bytes that were never sent: never let this blob commit.
            self._open = False
            raise

    def _write(self, view: memoryview) -> None:
        self._digest.update(view)
        size = self._block_size
        while view:
            if not self._buf and len(view) >= size:  # whole block straight from the caller
                self._stage(view[:size])
                view = view[size:]
                continue
            take = min(size - len(self._buf), len(view))
            self._buf += view[:take]
            view = view[take:]
            if len(self._buf) == size:
                self._stage(self._buf)
                self._buf.clear()

    def finish(self) -> AzureStagedBlob:
        if not self._open:
            raise RuntimeError("finish after finish, abort or a failed write")
        self._open = False  # one attempt: a failure here leaves only what abort() cleans up
        if self._buf:
            self._stage(self._buf)
        self._buf = bytearray()
        self._store.ensure_container()
        self._committed = True  # set first: the commit may land even if its reply is lost
        self._blob.commit_block_list([BlobBlock(block_id=i) for i in self._block_ids])
        return AzureStagedBlob(self._store, self._blob, self._digest.hexdigest(), self._digest.size)

    def abort(self) -> None:
        self._open = False
        self._buf = bytearray()
        if self._committed or self._block_ids:
            # Uncommitted blocks are garbage-collected by Azure anyway; Azurite wants the delete.
            self._store.delete_quietly(self._blob)


class AzureBlobStore:
    """Content-addressed bytes in one container; see the module docstring for the protocol."""

    def __init__(
        self,
        container_client: ContainerClient,
        block_size: int = DEFAULT_BLOCK_SIZE,
        *,
        read_chunk: int = READ_CHUNK,
        copy_timeout: float = 600.0,
    ) -> None:
        if not 0 < block_size <= MAX_BLOCK_SIZE:
            raise ValueError(f"block_size must be in 1..{MAX_BLOCK_SIZE}")
        if read_chunk <= 0:
            raise ValueError("read_chunk must be positive")
        self.container = container_client
        self.block_size = block_size
        # Each ranged GET is materialised whole by the SDK (with transient copies), so reads are
        # issued one bounded range at a time rather than as one download of the whole object.
        self.read_chunk = read_chunk
        self.copy_timeout = copy_timeout
        self._container_ready = False

    @classmethod
    def from_connection_string(cls, conn_str: str, container: str, **kwargs: Any) -> AzureBlobStore:
        """Shared-key or SAS access, e.g. Azurite or ``AzureWebJobsStorage``."""
        client = ContainerClient.from_connection_string(conn_str, container_name=container)
        return cls(client, **kwargs)

    @classmethod
    def from_account_url(cls, url: str, container: str, **kwargs: Any) -> AzureBlobStore:
        """Entra ID (managed identity, CLI login...) without shipping azure-identity to everyone."""
        try:
            identity = importlib.import_module("azure.identity")
        except ImportError as exc:
            raise RuntimeError(
                "AzureBlobStore.from_account_url needs azure-identity: pip install azure-identity"
            ) from exc
        client = ContainerClient(
            url, container_name=container, credential=identity.DefaultAzureCredential()
        )
        return cls(client, **kwargs)

    # -- helpers shared with the writer and staged blob -------------------------------------

    def ensure_container(self) -> None:
        """Create the container on the first write, so deployments need no setup step."""
        if self._container_ready:
            return
        with contextlib.suppress(ResourceExistsError):
            self.container.create_container()
        self._container_ready = True

    def blob_for(self, sha256: str) -> BlobClient:
        return self.container.get_blob_client(OBJECTS_PREFIX + object_name(sha256))

    def copy_state(self, blob: BlobClient) -> str:
        """``missing``, ``success`` (complete), ``pending``, ``failed`` or ``aborted``."""
        try:
            props = blob.get_blob_properties()
        except ResourceNotFoundError:
            return _MISSING
        return _copy_state(props.copy.status)

    def wait_for_copy(self, blob: BlobClient) -> str:
        """Poll a pending copy with backoff until it settles or ``copy_timeout`` runs out."""
        deadline = time.monotonic() + self.copy_timeout
        delay = 0.05
        while True:
            state = self.copy_state(blob)
            if state != "pending":
                return state
            if time.monotonic() >= deadline:
                raise TimeoutError(
                    f"copy to {blob.blob_name} still pending after {self.copy_timeout}s"
                )
            time.sleep(delay)
            delay = min(delay * 2, 2.0)

    def abort_copy_quietly(self, blob: BlobClient, copy_id: str | None) -> None:
        """Best effort after a timeout; the incomplete destination must not linger either way."""
        if copy_id:
            with contextlib.suppress(HttpResponseError):
                blob.abort_copy(copy_id)
        self.delete_quietly(blob)

    def delete_quietly(self, blob: BlobClient) -> None:
        with contextlib.suppress(ResourceNotFoundError):
            blob.delete_blob(delete_snapshots="include")

    # -- the publication journal ----------------------------------------------------------------

    def journal(self, sha256: str) -> None:
        """A durable note that these bytes may be published (see the module docstring)."""
        check_sha256(sha256)
        self.ensure_container()
        name = f"{JOURNAL_PREFIX}{sha256}.{uuid.uuid4().hex}"
        self.container.get_blob_client(name).upload_blob(b"", overwrite=True)

    def journaled(self, before: datetime) -> list[tuple[str, str]]:
        """(entry, sha256) of the journal entries written before ``before``; the listing is
        paged lazily, so only the entries kept are held, not every entry's properties."""
        out = []
        try:
            for props in self.container.list_blobs(name_starts_with=JOURNAL_PREFIX):
                entry = props.name[len(JOURNAL_PREFIX) :]
                match = _JOURNAL_ENTRY.match(entry)
                if match and props.last_modified is not None and props.last_modified < before:
                    out.append((entry, match.group(1)))
        except ResourceNotFoundError:  # no container yet: nothing was ever journaled
            return []
        return out

    def unjournal(self, entry: str) -> None:
        if _JOURNAL_ENTRY.match(entry) is None:
            raise ValueError(f"not a journal entry: {entry!r}")
        self.delete_quietly(self.container.get_blob_client(JOURNAL_PREFIX + entry))

    # -- BlobStore ------------------------------------------------------------------------------

    def writer(self) -> AzureBlobWriter:
        blob = self.container.get_blob_client(f"{STAGING_PREFIX}{uuid.uuid4().hex}")
        return AzureBlobWriter(self, blob, self.block_size)

    def exists(self, sha256: str) -> bool:
        return self.copy_state(self.blob_for(sha256)) == "success"

    def read(self, sha256: str, start: int = 0, end: int | None = None) -> Iterator[bytes]:
        blob = self.blob_for(sha256)  # validates the key before the first next()
        return self._read(blob, sha256, start, end)

    def _read(self, blob: BlobClient, sha256: str, start: int, end: int | None) -> Iterator[bytes]:
        if end is not None and end <= start:
            if not self.exists(sha256):
                raise FileNotFoundError(f"no blob {sha256}")
            return
        pos = start
        first = True
        while end is None or pos < end:
            want = self.read_chunk if end is None else min(self.read_chunk, end - pos)
            try:
                download = blob.download_blob(offset=pos, length=want)
            except ResourceNotFoundError as exc:
                raise FileNotFoundError(f"no blob {sha256}") from exc
            except HttpResponseError as exc:
                if exc.status_code == 416:  # start at or past the end (or an empty blob)
                    return
                raise
            if first and _copy_state(download.properties.copy.status) != "success":
                raise FileNotFoundError(f"blob {sha256} is still being copied")
            first = False
            got = 0
            for chunk in download.chunks():
                got += len(chunk)
                yield chunk
            pos += got
            if got < want:
                return

    def delete(self, sha256: str) -> None:
        self.delete_quietly(self.blob_for(sha256))

    def persist_many(self, staged: Sequence[StagedBlob]) -> None:
        """One journal blob each: a blob service has no directory sync to share."""
        for blob in staged:
            blob.persist()

    def sweep_staging(self, before: datetime) -> int:
        removed = 0
        try:
            listing = list(self.container.list_blobs(name_starts_with=STAGING_PREFIX))
        except ResourceNotFoundError:
            return 0  # no container yet: nothing was ever staged
        for props in listing:
            if props.last_modified is not None and props.last_modified < before:
                self.delete_quietly(self.container.get_blob_client(props.name))
                removed += 1
        return removed
