"""Upload sessions: files too large for one request go straight to storage, then complete.

``open`` declares the file (size, media type, metadata, purpose) and answers where to send it:
a SAS URL of a staging blob on Azure, the app's own streaming ``PUT`` here. ``claim`` and
``store`` turn the bytes into an atom exactly once: a claim is a compare-and-set on the row, so
the client's ``complete`` and the Event Grid blob trigger may race and both get the one result;
what completion produced stays on the row, so completing again answers the same. Workflows are
started by ``knowledge/uploads.py``, which holds the starting code of ingestions and models.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from hartonomous.domain.atoms import normalize_media_type
from hartonomous.domain.metadata import MAX_METADATA_BYTES, check_metadata
from hartonomous.domain.uploads import Purpose, Status, UploadSession
from hartonomous.errors import (
    Conflict,
    Gone,
    InvalidInput,
    NotFound,
    PayloadTooLarge,
    ServiceUnavailable,
    UnprocessableContent,
)
from hartonomous.knowledge.parsing import is_supported
from hartonomous.models.service import MODEL_MEDIA_TYPE
from hartonomous.ports import (
    StagedBlob,
    StagingWriter,
    UnitOfWorkFactory,
    UploadStaging,
    UploadTarget,
)
from hartonomous.services.atoms import WRITE_ATTEMPTS, AtomService, StoredAtom
from hartonomous.services.clock import new_id, utcnow
from hartonomous.store.repositories import WriteConflict

CLAIM_FOR = timedelta(minutes=30)  # hashing 64 GiB through ranged reads fits in it
KEEP_ROWS_FOR = timedelta(days=7)  # after expiry: completing again still answers the same
PARTIAL_WRITE_GRACE = timedelta(hours=1)  # a PUT untouched this long died with its process
RETRY_AFTER_S = 5


@dataclass(frozen=True)
class OpenedSession:
    session: UploadSession
    token: str  # the credential of the app's own PUT URL (shown once, stored hashed)
    target: UploadTarget | None  # where the bytes go without the app; None: the app's PUT


@dataclass(frozen=True)
class Claim:
    session: UploadSession
    claim_id: str | None  # None: the session had already ended; ``session`` says how


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class BoundedWriter:
    """The session's bytes through the app: never more than declared, exactly that at the end."""

    def __init__(self, writer: StagingWriter, size: int) -> None:
        self._writer, self._size = writer, size
        self.size = size
        self.received = 0

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.received += len(data)
        if self.received > self._size:
            self.abort()
            raise UnprocessableContent(
                f"more bytes than the {self._size} the session declared; nothing was kept",
                declared=self._size,
            )
        self._writer.write(data)

    def finish(self) -> None:
        if self.received != self._size:
            self.abort()
            raise UnprocessableContent(
                f"received {self.received} bytes, the session declared {self._size}; "
                "nothing was kept, send them again",
                declared=self._size,
                received=self.received,
            )
        self._writer.finish()

    def abort(self) -> None:
        self._writer.abort()


@dataclass
class UploadSessionService:
    uow_factory: UnitOfWorkFactory
    atoms: AtomService
    staging: UploadStaging | None
    max_bytes: int
    max_document_bytes: int
    ttl: timedelta

    def _staging(self) -> UploadStaging:
        if self.staging is None:
            raise ServiceUnavailable("this blob store has no staging area for upload sessions")
        return self.staging

    # -- opening and receiving -------------------------------------------------------------------

    def open(
        self,
        tenant_id: str,
        *,
        size: int,
        media_type: str | None,
        metadata: dict[str, Any],
        purpose: Purpose,
    ) -> OpenedSession:
        """Validate everything the bytes will need (nothing fails later for want of it)."""
        staging = self._staging()
        if size > self.max_bytes:
            raise PayloadTooLarge(
                f"{size} bytes exceed the upload session limit of {self.max_bytes} bytes",
                limit_bytes=self.max_bytes,
            )
        if purpose is Purpose.MODEL:
            media_type = MODEL_MEDIA_TYPE
        try:
            media = normalize_media_type(media_type)
        except ValueError as exc:
            raise InvalidInput(str(exc)) from exc
        check_metadata(metadata)
        if len(json.dumps(metadata, ensure_ascii=False).encode()) > MAX_METADATA_BYTES:
            raise InvalidInput(f"metadata is larger than {MAX_METADATA_BYTES} bytes")
        if purpose is Purpose.DOCUMENT:
            filename = metadata.get("filename")
            if not is_supported(media, filename if isinstance(filename, str) else None):
                raise UnprocessableContent(
                    f"documents of type {media!r} cannot be ingested; send text, Markdown, "
                    "HTML, JSON, PDF or source code (or name the file so its extension says)"
                )
            if size > self.max_document_bytes:
                raise PayloadTooLarge(
                    f"{size} bytes exceed the largest document ingestion parses "
                    f"({self.max_document_bytes} bytes)",
                    limit_bytes=self.max_document_bytes,
                )
        now = utcnow()
        session = UploadSession(
            id=new_id(),
            tenant_id=tenant_id,
            purpose=purpose,
            size=size,
            media_type=media,
            metadata=metadata,
            status=Status.PENDING,
            created_at=now,
            expires_at=now + self.ttl,
        )
        target = staging.direct_target(tenant_id, session.id, size, session.expires_at)
        token = secrets.token_urlsafe(32)
        with self.uow_factory(write=True, tenant_id=tenant_id) as uow:
            uow.upload_sessions.add(session, _hash(token))
            uow.commit()
        return OpenedSession(session, token, target)

    def get(self, tenant_id: str, upload_id: str) -> UploadSession:
        with self.uow_factory(write=False, tenant_id=tenant_id) as uow:
            session = uow.upload_sessions.get(tenant_id, upload_id)
        if session is None:
            raise NotFound(f"no upload session {upload_id!r}")
        return session

    def receiver(
        self, upload_id: str, *, token: str | None = None, tenant_id: str | None = None
    ) -> BoundedWriter:
        """A write of the session's bytes, authorized by its URL's token or by the tenant."""
        if token is not None:
            with self.uow_factory(write=False) as uow:
                found = uow.upload_sessions.get_with_token(upload_id)
            if found is None or not hmac.compare_digest(found[1], _hash(token)):
                raise NotFound(f"no upload session {upload_id!r}")
            session = found[0]
        elif tenant_id is not None:
            session = self.get(tenant_id, upload_id)
        else:
            raise NotFound(f"no upload session {upload_id!r}")
        if session.status is not Status.PENDING:
            raise Conflict(f"upload session {upload_id!r} is {session.status.value}")
        if session.expired(utcnow()):
            raise Gone(f"upload session {upload_id!r} expired at {session.expires_at.isoformat()}")
        writer = self._staging().writer(session.tenant_id, upload_id)
        return BoundedWriter(writer, session.size)

    # -- completing ------------------------------------------------------------------------------

    def claim(self, tenant_id: str, upload_id: str) -> Claim:
        """Take the session for completion; an ended one is returned unclaimed (to replay)."""
        staging = self._staging()
        session = self.get(tenant_id, upload_id)
        if session.status in (Status.COMPLETED, Status.FAILED):
            return Claim(session, None)
        now = utcnow()
        if session.expired(now) and session.status is Status.PENDING:
            raise Gone(f"upload session {upload_id!r} expired at {session.expires_at.isoformat()}")
        if session.status is Status.PENDING:
            received = staging.received(tenant_id, upload_id)
            if received is None:
                raise Conflict(
                    f"no bytes received yet for upload session {upload_id!r}: send them "
                    "to its url first"
                )
            if received != session.size:
                staging.discard(tenant_id, upload_id)
                raise UnprocessableContent(
                    f"received {received} bytes, the session declared {session.size}; they "
                    "were deleted, send the file again",
                    declared=session.size,
                    received=received,
                )
        claim_id = secrets.token_hex(16)
        with self.uow_factory(write=True, tenant_id=tenant_id) as uow:
            won = uow.upload_sessions.claim(tenant_id, upload_id, claim_id, now, now + CLAIM_FOR)
            uow.commit()
        if won:
            return Claim(self.get(tenant_id, upload_id), claim_id)
        session = self.get(tenant_id, upload_id)
        if session.status in (Status.COMPLETED, Status.FAILED):
            return Claim(session, None)
        if session.status is Status.PENDING and session.expired(utcnow()):
            raise Gone(f"upload session {upload_id!r} expired at {session.expires_at.isoformat()}")
        raise Conflict(
            f"upload session {upload_id!r} is being completed; ask again shortly",
            headers={"Retry-After": str(RETRY_AFTER_S)},
        )

    def store(self, session: UploadSession, claim_id: str) -> StoredAtom:
        """The claimed session's bytes as an atom (sealed, hashed, published), once."""
        if session.status is Status.COMPLETING and session.atom_id is not None:
            atom = self.atoms.get(tenant_id=session.tenant_id, atom_id=session.atom_id)
            return StoredAtom(atom, deduplicated=bool(session.deduplicated))
        staging = self._staging()
        try:
            staged = staging.seal(session.tenant_id, session.id)
        except BaseException:
            self.release(session, claim_id, Status.PENDING)
            raise
        if staged is None or staged.size != session.size:
            self.release(session, claim_id, Status.PENDING)
            if staged is None:
                raise Conflict(f"no bytes received yet for upload session {session.id!r}")
            staging.discard(session.tenant_id, session.id)
            raise UnprocessableContent(
                f"received {staged.size} bytes, the session declared {session.size}; they "
                "were deleted, send the file again",
                declared=session.size,
                received=staged.size,
            )
        try:
            if not self.atoms.blobs.exists(staged.sha256):
                staged.persist()
            for attempt in range(WRITE_ATTEMPTS):
                try:
                    stored = self._record(session, claim_id, staged)
                    break
                except WriteConflict:
                    if attempt == WRITE_ATTEMPTS - 1:
                        raise
        except BaseException:
            self.release(session, claim_id, Status.PENDING)  # the seal stays for the retry
            raise
        staged.discard()  # no-op once published; bytes already held go here
        return stored

    def _record(self, session: UploadSession, claim_id: str, staged: StagedBlob) -> StoredAtom:
        """The atom and the session's note of it in one transaction; a document's or model's
        session stays claimed while its workflow starts."""
        tenant_id = session.tenant_id
        done = session.purpose is Purpose.ATOM
        with self.uow_factory(write=True, tenant_id=tenant_id) as uow:
            stored = self.atoms.record_in(
                uow, tenant_id, staged, session.media_type, session.metadata
            )
            if not uow.upload_sessions.settle(
                tenant_id,
                session.id,
                claim_id,
                Status.COMPLETED if done else Status.COMPLETING,
                atom_id=stored.atom.id,
                deduplicated=stored.deduplicated,
                completed_at=utcnow() if done else None,
            ):
                raise Conflict(f"upload session {session.id!r} was completed by another caller")
            uow.commit()
        return stored

    def finish(
        self,
        session: UploadSession,
        claim_id: str,
        *,
        instance_id: str,
        model_id: str | None = None,
    ) -> UploadSession:
        """The workflow started: the session is done."""
        self._settle(
            session,
            claim_id,
            Status.COMPLETED,
            instance_id=instance_id,
            model_id=model_id,
            completed_at=utcnow(),
        )
        return self.get(session.tenant_id, session.id)

    def fail(self, session: UploadSession, claim_id: str, error: str) -> None:
        """The bytes were refused for good (not a GGUF...): completing again says so."""
        self._settle(session, claim_id, Status.FAILED, error=error[:2000], completed_at=utcnow())

    def release(self, session: UploadSession, claim_id: str, status: Status) -> None:
        """Give the claim back after a failure that a retry may get past."""
        with contextlib.suppress(Exception):  # the claim also runs out by itself
            self._settle(session, claim_id, status)

    def _settle(self, session: UploadSession, claim_id: str, status: Status, **fields: Any) -> None:
        with self.uow_factory(write=True, tenant_id=session.tenant_id) as uow:
            uow.upload_sessions.settle(session.tenant_id, session.id, claim_id, status, **fields)
            uow.commit()

    # -- sweeping --------------------------------------------------------------------------------

    def sweep(self) -> tuple[int, int]:
        """(staged objects, rows) deleted: bytes no live session owns, and rows whose
        session ended more than a week ago. Sessions act for no tenant here."""
        staging = self._staging()
        now = utcnow()

        def live(upload_ids: Sequence[str]) -> set[str]:
            with self.uow_factory(write=False) as uow:
                return uow.upload_sessions.live_ids(upload_ids, now)

        objects = staging.sweep(live, now - PARTIAL_WRITE_GRACE)
        with self.uow_factory(write=True) as uow:
            rows = uow.upload_sessions.delete_expired_before(now - KEEP_ROWS_FOR)
            uow.commit()
        return objects, rows


def replayed(session: UploadSession) -> UploadSession:
    """A failed session's answer, raised again: completing twice answers the same."""
    if session.status is Status.FAILED:
        raise UnprocessableContent(session.error or "the upload was refused")
    return session
