"""Where upload sessions' bytes wait: beside the blob store, in the same folder or account.

Three names per session: the *received* bytes (the client's target: the app's PUT writes
there, or, on Azure, a SAS URL for that one blob), a write in progress (local only), and the
*sealed* bytes. Completion first moves the received bytes to the sealed name (a rename, or a
server-side copy on Azure), out of the client's reach, then hashes them through bounded reads;
so bytes that a late PUT changes are never published under another content's hash. Publishing
the sealed bytes is the blob store's own: a hard link onto ``objects/`` (or a rename where the
file system has no hard links) or a server-side copy.
"""

from __future__ import annotations

import contextlib
import re
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from hartonomous.blobs.hashing import Digest
from hartonomous.blobs.local import LocalBlobStore, LocalStagedBlob
from hartonomous.domain.uploads import RECEIVED_PREFIX as RECEIVED_PREFIX  # re-exported
from hartonomous.domain.uploads import session_of

if TYPE_CHECKING:
    from azure.storage.blob import BlobClient, UserDelegationKey

    from hartonomous.blobs.azure import AzureBlobStore, AzureBlobWriter, AzureStagedBlob

HASH_CHUNK = 4 * 1024 * 1024  # each ranged GET is held whole (with copies) by the SDK
SEALED_PREFIX = "sealed-uploads/"
_OWNED_TMP = re.compile(r"^[^.]+\.([0-9a-f]{32})\.[0-9a-f]{32}\.tmp$")  # <id>.<owner>.<hex>


@dataclass(frozen=True)
class Target:
    url: str
    method: str = "PUT"
    headers: dict[str, str] = field(default_factory=dict)


def _hash_file(path: Path) -> Digest:
    digest = Digest()
    buf = bytearray(HASH_CHUNK)
    view = memoryview(buf)
    with path.open("rb") as f:
        while n := f.readinto(buf):
            digest.update(view[:n])
    return digest


class _LocalWriter:
    def __init__(self, tmp: Path, final: Path) -> None:
        self._tmp, self._final = tmp, final
        self._file: BinaryIO | None = tmp.open("xb")

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self._file is None:
            raise RuntimeError("write after finish or abort")
        self._file.write(data)

    def finish(self) -> None:
        if self._file is None:
            raise RuntimeError("finish after finish or abort")
        self._file.close()
        self._file = None
        self._tmp.replace(self._final)  # atomic: a reader sees the old bytes or the new

    def abort(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        self._tmp.unlink(missing_ok=True)


class LocalUploadStaging:
    """``<blob root>/uploads/<id>`` received, ``<id>.sealed``, ``<id>.<owner>.<hex>.tmp``
    being written; on the blob store's file system, so publishing is a link or a rename. The
    ``<owner>`` is the store's flock-held owner token: building the staging removes the
    temporary files of owners no live process holds (see ``blobs/local.py``)."""

    def __init__(self, store: LocalBlobStore) -> None:
        self._store = store
        self.root = store.root / "uploads"
        self.root.mkdir(parents=True, exist_ok=True)
        # Writes in progress carry the store's owner token: a crash's leftovers go now.
        self.abandoned_at_start = store.sweep_abandoned_in(self.root, _OWNED_TMP)

    def _received(self, upload_id: str) -> Path:
        return self.root / upload_id

    def _sealed(self, upload_id: str) -> Path:
        return self.root / f"{upload_id}.sealed"

    def direct_target(
        self, tenant_id: str, upload_id: str, size: int, expires_at: datetime
    ) -> Target | None:
        return None  # the bytes come through the app's own PUT

    def writer(self, tenant_id: str, upload_id: str) -> _LocalWriter:
        tmp = self.root / f"{upload_id}.{self._store.owner_token}.{uuid.uuid4().hex}.tmp"
        return _LocalWriter(tmp, self._received(upload_id))

    def received(self, tenant_id: str, upload_id: str) -> int | None:
        for path in (self._received(upload_id), self._sealed(upload_id)):
            with contextlib.suppress(FileNotFoundError):
                return path.stat().st_size
        return None

    def seal(self, tenant_id: str, upload_id: str) -> LocalStagedBlob | None:
        sealed = self._sealed(upload_id)
        with contextlib.suppress(FileNotFoundError):
            self._received(upload_id).replace(sealed)
        try:
            digest = _hash_file(sealed)
        except FileNotFoundError:
            return None
        return LocalStagedBlob(self._store, sealed, digest.hexdigest(), digest.size)

    def discard(self, tenant_id: str, upload_id: str) -> None:
        self._received(upload_id).unlink(missing_ok=True)
        self._sealed(upload_id).unlink(missing_ok=True)

    def sweep(self, live: Callable[[Sequence[str]], set[str]], before: datetime) -> int:
        entries = [p for p in self.root.iterdir() if p.is_file()]
        keep = live([p.name.split(".", 1)[0] for p in entries])
        cutoff = before.timestamp()
        removed = 0
        for path in entries:
            with contextlib.suppress(FileNotFoundError):  # completed or swept meanwhile
                stale = path.suffix == ".tmp" and path.stat().st_mtime < cutoff
                if path.name.split(".", 1)[0] not in keep or stale:
                    path.unlink()
                    removed += 1
        return removed


class _AzureWriter:
    """The app's PUT on Azure: Put Block calls on the received blob itself."""

    def __init__(self, writer: AzureBlobWriter) -> None:
        self._writer = writer

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self._writer.write(data)

    def finish(self) -> None:
        self._writer.finish()  # commits the block list; its staged blob is not published

    def abort(self) -> None:
        self._writer.abort()


class AzureUploadStaging:
    """``uploads/<tenant>/<id>`` received (a SAS lets the client create and write that one
    blob until the session expires), ``sealed-uploads/<tenant>/<id>`` sealed."""

    def __init__(self, store: AzureBlobStore) -> None:
        self._store = store
        self._delegation: UserDelegationKey | None = None

    def _blob(self, prefix: str, tenant_id: str, upload_id: str) -> BlobClient:
        return self._store.container.get_blob_client(f"{prefix}{tenant_id}/{upload_id}")

    def direct_target(
        self, tenant_id: str, upload_id: str, size: int, expires_at: datetime
    ) -> Target | None:
        from azure.storage.blob import BlobSasPermissions, generate_blob_sas

        self._store.ensure_container()
        blob = self._blob(RECEIVED_PREFIX, tenant_id, upload_id)
        credential: Any = self._store.container.credential
        signing: dict[str, Any]
        if hasattr(credential, "account_key"):  # shared key: an account-key (service) SAS
            signing = {"account_key": credential.account_key}
        elif hasattr(credential, "get_token"):  # Entra ID: a user-delegation SAS
            signing = {"user_delegation_key": self._delegation_key(expires_at)}
        else:
            return None  # a SAS connection string cannot sign another SAS: PUT through the app
        sas = generate_blob_sas(
            account_name=blob.account_name or "",
            container_name=blob.container_name,
            blob_name=blob.blob_name,
            permission=BlobSasPermissions(create=True, write=True),
            expiry=expires_at,
            start=datetime.now(expires_at.tzinfo) - timedelta(minutes=5),  # clock skew
            **signing,
        )
        return Target(
            url=f"{blob.url}?{sas}",
            headers={"x-ms-blob-type": "BlockBlob", "Content-Type": "application/octet-stream"},
        )

    def _delegation_key(self, expires_at: datetime) -> UserDelegationKey:
        """One key a week, shared by the sessions it outlives (it signs their SAS)."""
        from azure.storage.blob import BlobServiceClient

        key = self._delegation
        if key is None or datetime.fromisoformat(str(key.signed_expiry)) < expires_at:
            container = self._store.container
            service = BlobServiceClient(
                f"{container.scheme}://{container.primary_hostname}",
                credential=container.credential,
            )
            now = datetime.now(expires_at.tzinfo)
            key = service.get_user_delegation_key(now, now + timedelta(days=7, minutes=-5))
            self._delegation = key
        return key

    def writer(self, tenant_id: str, upload_id: str) -> _AzureWriter:
        from hartonomous.blobs.azure import AzureBlobWriter

        blob = self._blob(RECEIVED_PREFIX, tenant_id, upload_id)
        return _AzureWriter(AzureBlobWriter(self._store, blob, self._store.block_size))

    def received(self, tenant_id: str, upload_id: str) -> int | None:
        from azure.core.exceptions import ResourceNotFoundError

        for prefix in (RECEIVED_PREFIX, SEALED_PREFIX):
            with contextlib.suppress(ResourceNotFoundError):
                return int(self._blob(prefix, tenant_id, upload_id).get_blob_properties().size)
        return None

    def seal(self, tenant_id: str, upload_id: str) -> AzureStagedBlob | None:
        from azure.core import MatchConditions
        from azure.core.exceptions import ResourceNotFoundError

        from hartonomous.blobs.azure import AzureStagedBlob

        store = self._store
        received = self._blob(RECEIVED_PREFIX, tenant_id, upload_id)
        sealed = self._blob(SEALED_PREFIX, tenant_id, upload_id)
        try:
            copy = sealed.start_copy_from_url(received.url)
        except ResourceNotFoundError:
            pass  # nothing new received: a crashed completion's seal may be there
        else:
            state = str(copy.get("copy_status") or "success")
            if state == "pending":
                state = store.wait_for_copy(sealed)
            if state != "success":
                store.delete_quietly(sealed)
                raise RuntimeError(f"sealing upload {upload_id} ended {state!r}")
            store.delete_quietly(received)
        try:
            props = sealed.get_blob_properties()
        except ResourceNotFoundError:
            return None
        digest = Digest()
        while digest.size < props.size:  # bounded ranged reads, all of the version measured
            chunk = sealed.download_blob(
                offset=digest.size,
                length=min(HASH_CHUNK, props.size - digest.size),
                etag=props.etag,
                match_condition=MatchConditions.IfNotModified,
            ).readall()
            if not chunk:
                raise RuntimeError(f"sealed upload {upload_id} ended early")
            digest.update(chunk)
        return AzureStagedBlob(store, sealed, digest.hexdigest(), digest.size)

    def discard(self, tenant_id: str, upload_id: str) -> None:
        for prefix in (RECEIVED_PREFIX, SEALED_PREFIX):
            self._store.delete_quietly(self._blob(prefix, tenant_id, upload_id))

    def sweep(self, live: Callable[[Sequence[str]], set[str]], before: datetime) -> int:
        """Uncommitted blocks of a crashed PUT need nothing: Azure drops them after a week.
        One listing page at a time (its names checked, its dead blobs deleted), so memory
        does not grow with the number of staged uploads."""
        from azure.core.exceptions import ResourceNotFoundError

        removed = 0
        try:
            for prefix in (RECEIVED_PREFIX, SEALED_PREFIX):
                pages = self._store.container.list_blobs(name_starts_with=prefix).by_page()
                for page in pages:
                    names = [props.name for props in page]
                    keep = live([name.rsplit("/", 1)[-1] for name in names])
                    for name in names:
                        if name.rsplit("/", 1)[-1] not in keep:
                            self._store.delete_quietly(self._store.container.get_blob_client(name))
                            removed += 1
        except ResourceNotFoundError:  # no container yet
            return removed
        return removed

    session_of = staticmethod(session_of)  # domain/uploads.py's, kept for callers
