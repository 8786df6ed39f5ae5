"""Blob lifecycle: bytes go only after the commit that dropped their last reference, and bytes
published by a transaction that then failed are found and collected.

* Deletion: ``BlobRepository.release`` queues the sha in ``blob_deletions`` inside the
  transaction that drops the last reference; nothing touches the bytes before it commits.
* Publication: a staged blob writes a journal entry in the blob store before new bytes can
  become visible (``BlobStore.journaled``); the sweep reconciles entries older than
  ``PUBLICATION_GRACE`` against ``blobs``.

Both end in ``_collect``: in one write unit of work, ``claim`` the sha's ``blobs`` row (an
insert of a placeholder with no references; an insert takes the key's lock on every database,
where a locking read of a missing row would not), delete the bytes only when the claim holds,
then drop the placeholder and the queue rows. On SQLite the claim runs under the one write
lock, so no upload can acquire the bytes between the check and the delete; on Azure SQL the
placeholder insert waits for a transaction that inserted the same row and fails if it
committed, and a later writer's insert waits for the sweep's commit, then finds the bytes gone
and publishes its own copy. Bytes acquired again before the sweep (a row with references) are
kept. Every step is idempotent: a sweep that dies half-way leaves its queue rows and journal
entries, and the next one finishes.

Why the journal lives in the blob store and not in SQL: the bytes get their address before
(the local folder's ``persist``) or inside (publish) the write transaction that references
them, which on SQLite holds the database's only write lock. A journal row written in that
transaction rolls back with it, the very case it must survive; a second write transaction
cannot be opened from inside it (it would wait for the lock its own thread holds); and one
written in its own transaction before would take the write lock once more for every staged
blob (each chunk of a document, three atoms a generation). The
blob store is durable on its own, takes no database lock, and its entry is written by
``persist`` outside the write lock. Entries precede their transaction, so the sweep leaves
them ``PUBLICATION_GRACE`` to finish; a staged blob journaled longer ago than the adapter's
refresh interval (10 minutes) is journaled again when it is persisted (the local folder) or
published (Azure).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from hartonomous.ports import BlobStore, UnitOfWorkFactory
from hartonomous.services.clock import utcnow

log = logging.getLogger(__name__)

PUBLICATION_GRACE = timedelta(hours=1)
BATCH = 100  # shas per write transaction: the lock is held while their bytes are deleted


@dataclass(frozen=True)
class SweepReport:
    deleted: int  # bytes deleted: no atom referenced them
    kept: int  # queued or journaled bytes that atoms reference (acquired again, committed)
    failed: int  # bytes whose deletion raised; retried by the next sweep


@dataclass
class BlobLifecycle:
    uow_factory: UnitOfWorkFactory
    blobs: BlobStore
    clock: Callable[[], datetime] = utcnow

    def sweep(self, *, grace: timedelta = PUBLICATION_GRACE) -> SweepReport:
        """Delete queued bytes no atom references, then reconcile the publication journal."""
        deleted = kept = failed = 0
        stuck: set[str] = set()
        while True:
            with self.uow_factory(write=False) as uow:
                shas = [s for s in uow.blobs.queued_deletions(BATCH + len(stuck)) if s not in stuck]
            if not shas:
                break
            done, gone = self._collect(shas)
            deleted += len(gone)
            kept += len(done) - len(gone)
            stuck |= set(shas) - done
        failed += len(stuck)
        entries = self.blobs.journaled(self.clock() - grace)
        shas = list(dict.fromkeys(sha for _, sha in entries))
        with self.uow_factory(write=False) as uow:
            referenced = uow.blobs.referenced(shas)
        settled = set(referenced)
        loose = [sha for sha in shas if sha not in referenced]
        for i in range(0, len(loose), BATCH):
            done, gone = self._collect(loose[i : i + BATCH])
            settled |= done
            deleted += len(gone)
            failed += len(loose[i : i + BATCH]) - len(done)
        kept += len(referenced)
        for entry, sha in entries:
            if sha in settled:
                self.blobs.unjournal(entry)
        return SweepReport(deleted=deleted, kept=kept, failed=failed)

    def _collect(self, shas: Sequence[str]) -> tuple[set[str], set[str]]:
        """(settled, deleted): the shas dealt with, and those of them whose bytes went."""
        settled: set[str] = set()
        deleted: set[str] = set()
        now = self.clock()
        with self.uow_factory(write=True) as uow:
            for sha in shas:
                if uow.blobs.claim(sha, now):
                    try:
                        self.blobs.delete(sha)  # under the claim: no writer can acquire it
                    except Exception:
                        log.exception(
                            "could not delete the bytes of %s; kept for the next sweep", sha
                        )
                        uow.blobs.settle(sha, dequeue=False)
                        continue
                    deleted.add(sha)
                uow.blobs.settle(sha)
                settled.add(sha)
            uow.commit()
        return settled, deleted
