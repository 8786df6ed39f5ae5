"""Blob store on a local folder: ``objects/ab/cd/<sha256>``, staged under ``staging/``.

A write goes to a private staging file while it is hashed. ``persist`` (outside the write
lock; bytes already held are discarded without it) fsyncs the file, journals it, and gives it
its content address as a hard link whose directory is fsynced, as is the parent of every
fan-out directory it creates. ``publish``, under the write lock, then only checks that the
address exists and drops the staging name; it links (and fsyncs) itself only when ``persist``
did not run or the bytes were deleted since (a sweep collected an earlier copy), and syncs the
folder when the address still shares its file with another writer's staging name (that
writer's sync may be pending; a commit must not rely on it). A file system without hard links
gets the old way: a rename and its folder's sync in ``publish``. Bytes that
carry their address before any row references them are harmless: only atoms make bytes
reachable, and an address is its content. Why: the directory fsyncs were the tail of a
generation's receipt transaction, which holds SQLite's only write lock (three atoms, three
directories; p95 7 ms with them, docs/billing.md).

Publication journal: before new bytes can carry their address, an empty
``journal/<sha>.<uuid>`` is made durable (see ``services/blob_lifecycle.py`` for why the
journal lives here, not in SQL), so bytes persisted for a transaction that never commits are
collected by the sweep.

Owned staging: each store holds an ``flock`` on ``owners/<token>.lock`` for its life and names
its staging files ``<token>.<uuid>.part``. Constructing a store removes the staging files of
owners no live process holds (a crash's leftovers) at once, instead of after the 24 h sweep.
The constructor is the hook because every process that opens the folder (``hartonomous
serve``, the CLI, a Function host) starts there, and the lock is the adapter's own liveness
signal, not something the platform knows about. ``flock`` is advisory and local: a folder
shared by several machines (NFS) needs the age-based sweep only.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import time
import uuid
import weakref
from collections.abc import Iterator, Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from hartonomous.blobs.hashing import READ_CHUNK, Digest, check_sha256, object_name

if TYPE_CHECKING:
    from hartonomous.ports import StagedBlob

try:
    import fcntl
except ImportError:  # Windows: no advisory locks; crash leftovers wait for the age sweep
    fcntl = None  # type: ignore[assignment]

JOURNAL_REFRESH_S = 600.0  # persist re-journals bytes journaled longer ago than this
# os.link's errors on file systems without hard links (FAT, exFAT, some SMB and FUSE mounts).
_NO_HARD_LINKS = {errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EXDEV, errno.ENOSYS}
_JOURNAL_ENTRY = re.compile(r"^([0-9a-f]{64})\.([0-9a-f]{32})$")
_STAGING_FILE = re.compile(r"^(?:([0-9a-f]{32})\.)?[0-9a-f]{32}\.part$")


def fsync_dir(path: Path) -> None:
    """Make the directory's entries (a rename, a new file or subdirectory) durable."""
    if os.name == "nt":  # directories cannot be opened; NTFS journals renames itself
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class LocalStagedBlob:
    def __init__(self, store: LocalBlobStore, path: Path, sha256: str, size: int) -> None:
        self._store, self._path = store, path
        self.sha256, self.size = sha256, size
        self._durable = False
        self._linked = False
        self._journaled_at: float | None = None

    def persist(self) -> None:
        self._store.persist_many([self])

    def _sync_bytes(self) -> None:
        if not self._durable:
            fd = os.open(self._path, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
            self._durable = True

    def _journal_due(self) -> bool:
        at = self._journaled_at
        return at is None or time.monotonic() - at > JOURNAL_REFRESH_S

    def publish(self) -> None:
        final = self._store.path_for(self.sha256)
        try:
            links = final.stat().st_nlink
        except FileNotFoundError:
            self._linked = False  # never persisted, or deleted since: link (and sync) now
            self.persist()  # the bytes and their journal entry are durable before their name
            if not final.exists():  # no hard links on this file system (FAT, SMB): rename
                self._path.replace(final)
                fsync_dir(final.parent)
        else:
            # Another writer's staging name still shares the file: it linked the address and
            # may not have synced its folder yet (it does so outside the lock). This commit
            # must not rely on a name a crash could take back.
            if links > 1 and not self._linked:
                fsync_dir(final.parent)
        self.discard()

    def discard(self) -> None:
        # Windows refuses to remove a name of a file open under another (a reader of the
        # object): the staging name is then left to the staging sweeps.
        try:
            self._path.unlink(missing_ok=True)
        except PermissionError:
            if os.name != "nt":
                raise


def _local(blob: StagedBlob) -> LocalStagedBlob:
    if not isinstance(blob, LocalStagedBlob):
        raise TypeError(f"{type(blob).__name__} was not staged by a local blob store")
    return blob


class LocalBlobWriter:
    def __init__(self, store: LocalBlobStore) -> None:
        self._store = store
        self._path = store.staging / f"{store.owner_token}.{uuid.uuid4().hex}.part"
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
        self.journal_dir = root / "journal"
        self.owners = root / "owners"
        for folder in (self.objects, self.staging, self.journal_dir, self.owners):
            folder.mkdir(parents=True, exist_ok=True)
        self.owner_token = self._own()
        self.abandoned_at_start = self.sweep_abandoned()

    # -- staging ownership ------------------------------------------------------------------------

    def _own(self) -> str:
        """Hold ``owners/<token>.lock`` until this store is collected or the process ends.
        Locked under a temporary name first: a sweeper that finds the final name unlocked
        may rightly take it for a dead owner's."""
        for _ in range(3):
            token = uuid.uuid4().hex
            if fcntl is None:
                return token
            tmp = self.owners / f"{token}.tmp"
            fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                tmp.rename(self.owners / f"{token}.lock")
            except OSError:  # a start-up sweep removed it in between: try another token
                os.close(fd)
                continue
            weakref.finalize(self, os.close, fd)
            return token
        raise RuntimeError(f"could not register a staging owner in {self.owners}")

    def sweep_abandoned(self) -> int:
        """Remove staging files whose owner no live process holds; returns how many."""
        return self.sweep_abandoned_in(self.staging, _STAGING_FILE)

    def sweep_abandoned_in(self, folder: Path, pattern: re.Pattern[str]) -> int:
        """Remove the files of ``folder`` whose name ``pattern`` matches, with the owner's
        token as its first group, that no live process holds (so other writers beside the
        store, such as upload staging, name their files with ``owner_token`` too)."""
        if fcntl is None:
            return 0
        removed = 0
        dead: dict[str | None, bool] = {}
        held: list[int] = []
        try:
            for path in folder.iterdir():
                match = pattern.match(path.name)
                if match is None:
                    continue
                token = match.group(1)
                if token not in dead:
                    dead[token] = self._take_if_dead(token, held, unregistered=True)
                if dead[token]:
                    with contextlib.suppress(FileNotFoundError):
                        path.unlink()
                        removed += 1
            for path in self.owners.iterdir():  # owners that died before staging anything
                token = path.name.split(".")[0]
                if token not in dead and self._take_if_dead(token, held, unregistered=False):
                    dead[token] = True
            for token, is_dead in dead.items():
                if is_dead and token is not None:
                    for suffix in (".lock", ".tmp"):
                        (self.owners / f"{token}{suffix}").unlink(missing_ok=True)
        finally:
            for fd in held:
                os.close(fd)
        return removed

    def _take_if_dead(self, token: str | None, held: list[int], *, unregistered: bool) -> bool:
        """True when no process holds ``token``'s lock (which is then ours until the sweep
        ends). A token with no lock file at all is ``unregistered``: dead for a staging file
        (the lock exists before any of its files does), alive for an owner file listed a
        moment ago (it is being renamed from ``.tmp`` to ``.lock``)."""
        if token is None:  # a file named before staging had owners
            return True
        if token == self.owner_token:
            return False
        for suffix in (".lock", ".tmp"):
            try:
                fd = os.open(self.owners / f"{token}{suffix}", os.O_RDWR)
            except FileNotFoundError:
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(fd)
                return False
            held.append(fd)
            return True
        return unregistered

    # -- the publication journal -----------------------------------------------------------------

    def journal(self, sha256: str) -> None:
        """A durable note that these bytes may be published (see the module docstring)."""
        self._journal_entries([sha256])

    def _journal_entries(self, shas: Sequence[str]) -> None:
        for sha256 in shas:
            check_sha256(sha256)
            fd = os.open(
                self.journal_dir / f"{sha256}.{uuid.uuid4().hex}", os.O_WRONLY | os.O_CREAT, 0o644
            )
            os.close(fd)
        fsync_dir(self.journal_dir)  # every entry above with one sync

    def persist_many(self, staged: Sequence[StagedBlob]) -> None:
        """Bytes, then journal entries, then names, each step for every blob before the next
        (the order that makes a crash safe), so the directory syncs of one step are shared:
        one for the journal, one per fan-out directory (on ext4 the later ones find the
        journal committed already)."""
        blobs = [_local(blob) for blob in staged]
        for blob in blobs:
            blob._sync_bytes()
        due = [blob for blob in blobs if blob._journal_due()]
        if due:
            self._journal_entries([blob.sha256 for blob in due])
            now = time.monotonic()
            for blob in due:
                blob._journaled_at = now
        unlinked = [blob for blob in blobs if not blob._linked]
        parents = list(dict.fromkeys(self.path_for(blob.sha256).parent for blob in unlinked))
        self.make_dirs(parents)
        linked = []
        for blob in unlinked:
            try:
                os.link(blob._path, self.path_for(blob.sha256))
            except FileExistsError:  # the same bytes from another writer
                pass
            except OSError as exc:  # no hard links here: publish renames, under the lock
                if exc.errno not in _NO_HARD_LINKS:
                    raise
                continue
            linked.append(blob)
        for parent in parents:  # that writer's link too, if it has not synced it yet
            fsync_dir(parent)
        for blob in linked:
            blob._linked = True

    def journaled(self, before: datetime) -> list[tuple[str, str]]:
        """(entry, sha256) of the journal entries written before ``before``."""
        cutoff = before.timestamp()
        out = []
        for path in self.journal_dir.iterdir():
            match = _JOURNAL_ENTRY.match(path.name)
            if match is None:
                continue
            with contextlib.suppress(FileNotFoundError):
                if path.stat().st_mtime < cutoff:
                    out.append((path.name, match.group(1)))
        return out

    def unjournal(self, entry: str) -> None:
        if _JOURNAL_ENTRY.match(entry) is None:
            raise ValueError(f"not a journal entry: {entry!r}")
        (self.journal_dir / entry).unlink(missing_ok=True)

    # -- BlobStore --------------------------------------------------------------------------------

    def make_dirs(self, folders: Sequence[Path]) -> None:
        """``mkdir -p`` of each folder, then one fsync of each parent of a directory made."""
        synced: dict[Path, None] = {}
        for folder in folders:
            missing = []
            while not folder.is_dir():
                missing.append(folder)
                folder = folder.parent
            for new in reversed(missing):
                with contextlib.suppress(FileExistsError):
                    new.mkdir()
                synced[new.parent] = None
        for parent in synced:
            fsync_dir(parent)

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
