"""Storing, reading, listing and deleting atoms.

Bytes are stored once for the whole platform (content addressing) but an atom belongs to one
tenant: dedup is reported per tenant, so no tenant learns what another holds. The blob row's
reference count, changed in the write transaction that publishes the bytes or drops their
last atom, orders a concurrent put and delete of the same content; the bytes themselves are
deleted after that commit, by the lifecycle sweep (``services/blob_lifecycle.py``).
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from hartonomous.domain.atoms import Atom, modality_for, normalize_media_type
from hartonomous.domain.metadata import MAX_METADATA_BYTES as MAX_METADATA_BYTES
from hartonomous.domain.metadata import check_metadata
from hartonomous.domain.metadata import parse_metadata as parse_metadata
from hartonomous.errors import Conflict, InvalidInput, NotFound, PayloadTooLarge
from hartonomous.ports import BlobStore, BlobWriter, StagedBlob, UnitOfWork, UnitOfWorkFactory
from hartonomous.services.clock import new_id, utcnow
from hartonomous.store.repositories import AtomFilter, PagePosition, WriteConflict

WRITE_ATTEMPTS = 3


class Upload:
    """A streaming upload with its size limit enforced as bytes arrive, not after."""

    def __init__(self, writer: BlobWriter, limit: int) -> None:
        self._writer = writer
        self._limit = limit
        self.received = 0

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.received += len(data)
        if self.received > self._limit:
            self.abort()
            raise PayloadTooLarge(
                f"the upload exceeds the limit of {self._limit} bytes",
                limit_bytes=self._limit,
            )
        self._writer.write(data)

    def finish(self) -> StagedBlob:
        return self._writer.finish()

    def abort(self) -> None:
        self._writer.abort()


@dataclass(frozen=True)
class StoredAtom:
    atom: Atom
    deduplicated: bool  # this tenant already had an atom with these bytes
    new_bytes: bool = False  # no atom of any tenant held these bytes before


@dataclass(frozen=True)
class AtomPage:
    items: list[Atom]
    next_cursor: str | None


def encode_cursor(atom: Atom) -> str:
    return encode_position(atom.created_at, atom.id)


def encode_position(at: datetime, key: str) -> str:
    """An opaque keyset cursor of (time, id); ``decode_cursor`` reads it back."""
    raw = json.dumps([at.isoformat(), key]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> PagePosition:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        created_at, atom_id = json.loads(raw)
        return PagePosition(created_at=datetime.fromisoformat(created_at), id=str(atom_id))
    except (binascii.Error, ValueError, TypeError) as exc:
        raise InvalidInput(
            "the cursor is not one this API returned; pass next_cursor unchanged"
        ) from exc


@dataclass
class AtomService:
    uow_factory: UnitOfWorkFactory
    blobs: BlobStore
    max_upload_bytes: int

    def begin_upload(self, limit: int | None = None) -> Upload:
        """A streamed write; ``limit`` overrides the upload limit (models are larger)."""
        return Upload(self.blobs.writer(), limit or self.max_upload_bytes)

    def store(
        self,
        *,
        tenant_id: str,
        upload: Upload,
        media_type: str | None,
        metadata: dict[str, Any],
    ) -> StoredAtom:
        """Finish an upload and record it; the same bytes twice give the same atom."""
        try:
            media = normalize_media_type(media_type)
            check_metadata(metadata)  # nothing stored may break a later read
        except (ValueError, InvalidInput) as exc:
            upload.abort()
            raise InvalidInput(str(exc)) from exc
        staged = upload.finish()
        if not self.blobs.exists(staged.sha256):
            staged.persist()  # fsync outside the write lock; held bytes need none
        try:
            for _ in range(WRITE_ATTEMPTS - 1):
                with contextlib.suppress(WriteConflict):
                    return self._record(tenant_id, staged, media, metadata)
            return self._record(tenant_id, staged, media, metadata)  # last try: let it raise
        finally:
            staged.discard()

    def _record(
        self, tenant_id: str, staged: StagedBlob, media: str, metadata: dict[str, Any]
    ) -> StoredAtom:
        with self.uow_factory(write=True, tenant_id=tenant_id) as uow:
            stored = self.record_in(uow, tenant_id, staged, media, metadata)
            uow.commit()
            return stored

    def record_in(
        self,
        uow: UnitOfWork,
        tenant_id: str,
        staged: StagedBlob,
        media: str,
        metadata: dict[str, Any],
    ) -> StoredAtom:
        """Record staged bytes as an atom inside the caller's write transaction."""
        return self.record_many_in(uow, tenant_id, [(staged, media, metadata)])[0]

    def record_many_in(
        self,
        uow: UnitOfWork,
        tenant_id: str,
        items: Sequence[tuple[StagedBlob, str, dict[str, Any]]],
    ) -> list[StoredAtom]:
        """``record_in`` for many (staged bytes, media type, metadata) at once, in a few
        statements instead of four per atom: a document's chunks, a group of model parts.
        The same bytes twice in ``items`` give the same atom."""
        shas = list(dict.fromkeys(staged.sha256 for staged, _, _ in items))
        existing = uow.atoms.find_many_by_sha256(tenant_id, shas)
        now = utcnow()
        created: dict[str, Atom] = {}
        for staged, media, metadata in items:
            if staged.sha256 not in existing and staged.sha256 not in created:
                created[staged.sha256] = Atom(
                    id=new_id(),
                    tenant_id=tenant_id,
                    sha256=staged.sha256,
                    size=staged.size,
                    media_type=media,
                    modality=modality_for(media),
                    metadata=metadata,
                    created_at=now,
                )
        new_bytes = uow.blobs.acquire_many({sha: a.size for sha, a in created.items()}, now)
        uow.atoms.add_many(list(created.values()))
        published: set[str] = set()
        for staged, _, _ in items:  # inside the write transaction, as in record_in
            if staged.sha256 in created and staged.sha256 not in published:
                staged.publish()
                published.add(staged.sha256)
        out = []
        for staged, _, _ in items:
            if staged.sha256 in existing:
                out.append(StoredAtom(existing[staged.sha256], deduplicated=True))
            else:
                atom = created[staged.sha256]
                out.append(StoredAtom(atom, deduplicated=False, new_bytes=atom.sha256 in new_bytes))
        return out

    def stage(self, data: bytes | Iterable[bytes]) -> StagedBlob:
        """Bytes hashed and staged, for ``record_in`` (chunks, model parts). New bytes are
        made durable here, outside the write lock; bytes already held need no fsync."""
        return self.stage_many([data])[0]

    def stage_many(self, items: Sequence[bytes | Iterable[bytes]]) -> list[StagedBlob]:
        """``stage`` for several, persisted together: the blob store shares the syncs it can
        (a generation's three atoms took 9 fsyncs one by one)."""
        staged: list[StagedBlob] = []
        try:
            for data in items:
                writer = self.blobs.writer()
                try:
                    for piece in [data] if isinstance(data, bytes) else data:
                        writer.write(piece)
                    staged.append(writer.finish())
                except BaseException:
                    writer.abort()
                    raise
            self.blobs.persist_many([s for s in staged if not self.blobs.exists(s.sha256)])
        except BaseException:
            for blob in staged:
                blob.discard()
            raise
        return staged

    def store_bytes(
        self,
        *,
        tenant_id: str,
        chunks: Iterable[bytes],
        media_type: str | None,
        metadata: dict[str, Any] | None = None,
    ) -> StoredAtom:
        """Convenience for in-process callers (CLI, later pipelines)."""
        upload = self.begin_upload()
        try:
            for chunk in chunks:
                upload.write(chunk)
        except BaseException:
            upload.abort()
            raise
        return self.store(
            tenant_id=tenant_id, upload=upload, media_type=media_type, metadata=metadata or {}
        )

    def get(self, *, tenant_id: str, atom_id: str) -> Atom:
        with self.uow_factory(write=False, tenant_id=tenant_id) as uow:
            atom = uow.atoms.get(tenant_id, atom_id)
        if atom is None:
            raise NotFound(f"no atom {atom_id!r}")
        return atom

    def read(self, atom: Atom, start: int = 0, end: int | None = None) -> Iterator[bytes]:
        return self.blobs.read(atom.sha256, start, end)

    def list(
        self,
        *,
        tenant_id: str,
        limit: int,
        cursor: str | None,
        modality: str | None = None,
        media_type: str | None = None,
    ) -> AtomPage:
        after = decode_cursor(cursor) if cursor else None
        flt = AtomFilter(
            modality=modality,
            media_type=normalize_media_type(media_type) if media_type else None,
        )
        with self.uow_factory(write=False, tenant_id=tenant_id) as uow:
            items = uow.atoms.list(tenant_id, flt, limit + 1, after)
        more = len(items) > limit
        items = items[:limit]
        return AtomPage(items=items, next_cursor=encode_cursor(items[-1]) if more else None)

    def delete(self, *, tenant_id: str, atom_id: str) -> None:
        """Remove the atom; the bytes go once no atom of any tenant references them."""
        with self.uow_factory(write=True, tenant_id=tenant_id) as uow:
            atom = uow.atoms.get(tenant_id, atom_id)
            if atom is None:
                raise NotFound(f"no atom {atom_id!r}")
            if used := uow.models.references(tenant_id, atom_id):
                raise Conflict(
                    f"atom {atom_id!r} is part of a model ({used} parts); a model's header and "
                    "tensors go with the model"
                )
            if receipts := uow.receipts.for_atom(tenant_id, atom_id):
                raise Conflict(
                    f"atom {atom_id!r} is the prompt or output of a generation (receipt "
                    f"{receipts[0]!r}); receipts and what they name are kept",
                    receipts=receipts,
                )
            if concept := uow.concepts.is_described_by(tenant_id, atom_id):
                raise Conflict(
                    f"atom {atom_id!r} describes concept {concept!r}; a description is kept "
                    "while its concept exists, and replaced by the discovery that describes it "
                    "anew",
                    concept_id=concept,
                )
            uow.associations.forget_atom(tenant_id, atom_id)  # what the loop learned of it
            uow.knowledge.forget_atom(tenant_id, atom_id)
            uow.atoms.delete(tenant_id, atom_id)
            # At zero the bytes are queued in this transaction and deleted after it commits
            # (services/blob_lifecycle.py): a failed commit leaves the atom with its bytes.
            uow.blobs.release(atom.sha256)
            uow.commit()
