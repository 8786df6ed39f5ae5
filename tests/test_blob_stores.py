"""Contract tests shared by every BlobStore adapter: local folder and Azure (against Azurite)."""

from __future__ import annotations

import errno
import hashlib
import os
import random
import sys
import tracemalloc
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from azure.core.exceptions import HttpResponseError
from azure.storage.blob import BlobClient, ContainerClient

from hartonomous.blobs.azure import AzureBlobStore, AzureStagedBlob
from hartonomous.blobs.hashing import READ_CHUNK
from hartonomous.blobs.local import LocalBlobStore
from hartonomous.ports import BlobStore, StagedBlob

MIB = 1024 * 1024


def _is_blob_store(store: AzureBlobStore | LocalBlobStore) -> BlobStore:
    """mypy checks here that both adapters satisfy the port structurally."""
    return store


@dataclass
class Harness:
    kind: str
    store: AzureBlobStore | LocalBlobStore
    staging: Callable[[], list[str]]
    objects: Callable[[], list[str]]
    container: ContainerClient | None = None


def _local(tmp_path: Path) -> Harness:
    store = LocalBlobStore(tmp_path / "blobs")
    return Harness(
        "local",
        store,
        staging=lambda: sorted(p.name for p in store.staging.iterdir()),
        objects=lambda: sorted(p.name for p in store.objects.rglob("*") if p.is_file()),
    )


def _azure(conn_str: str, block_size: int) -> Harness:
    container = ContainerClient.from_connection_string(
        conn_str, container_name=f"t{uuid.uuid4().hex[:24]}"
    )
    store = AzureBlobStore(container, block_size=block_size)

    def names(prefix: str) -> list[str]:
        if not container.exists():
            return []
        return sorted(b.name for b in container.list_blobs(name_starts_with=prefix))

    return Harness(
        "azure",
        store,
        staging=lambda: names("staging/"),
        objects=lambda: names("objects/"),
        container=container,
    )


@pytest.fixture(params=["local", pytest.param("azure", marks=pytest.mark.azurite)])
def make(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[..., Harness]]:
    """Factory of a fresh store of the parametrized kind (Azure: a new container per call)."""
    made: list[Harness] = []

    def factory(block_size: int = MIB) -> Harness:
        if request.param == "local":
            h = _local(tmp_path / str(len(made)))
        else:
            h = _azure(request.getfixturevalue("azurite_blob"), block_size)
        made.append(h)
        return h

    yield factory
    for h in made:
        if h.container is not None and h.container.exists():
            h.container.delete_container()


@pytest.fixture
def h(make: Callable[..., Harness]) -> Harness:
    return make()


def write(
    store: AzureBlobStore | LocalBlobStore, data: bytes, piece: int = 64 * 1024
) -> StagedBlob:
    w = store.writer()
    view = memoryview(data)
    for i in range(0, len(data), piece):
        w.write(view[i : i + piece])
    return w.finish()


def read_all(store: AzureBlobStore | LocalBlobStore, sha: str, *args: Any) -> bytes:
    return b"".join(store.read(sha, *args))


def payload(n: int, seed: int = 0) -> bytes:
    return random.Random(seed).randbytes(n)


# -- the contract ---------------------------------------------------------------------------


def test_round_trip(h: Harness) -> None:
    data = payload(200_001)
    staged = write(h.store, data, piece=7_777)
    assert staged.sha256 == hashlib.sha256(data).hexdigest()
    assert staged.size == len(data)
    staged.publish()
    assert h.store.exists(staged.sha256)
    assert read_all(h.store, staged.sha256) == data
    assert h.staging() == []
    sha = staged.sha256
    expected = sha if h.kind == "local" else f"objects/{sha[:2]}/{sha[2:4]}/{sha}"
    assert h.objects() == [expected]


def test_empty_blob(h: Harness) -> None:
    staged = write(h.store, b"")
    assert staged.sha256 == hashlib.sha256(b"").hexdigest()
    assert staged.size == 0
    staged.publish()
    assert h.store.exists(staged.sha256)
    assert read_all(h.store, staged.sha256) == b""
    assert read_all(h.store, staged.sha256, 0, 10) == b""


def test_multi_block_write_reads_back(make: Callable[..., Harness]) -> None:
    h = make(block_size=MIB)
    data = payload(3 * MIB + MIB // 2, seed=1)
    w = h.store.writer()
    # Odd pieces straddle block boundaries; one large write exercises the no-copy path.
    w.write(data[:300_001])
    w.write(data[300_001 : 300_001 + 2 * MIB + 5])
    rest = memoryview(data)[300_001 + 2 * MIB + 5 :]
    for i in range(0, len(rest), 123_457):
        w.write(rest[i : i + 123_457])
    staged = w.finish()
    assert staged.sha256 == hashlib.sha256(data).hexdigest()
    assert staged.size == len(data)
    if isinstance(staged, AzureStagedBlob):
        assert h.container is not None
        (name,) = h.staging()
        committed, uncommitted = h.container.get_blob_client(name).get_block_list("all")
        assert [b.size for b in committed] == [MIB, MIB, MIB, MIB // 2]
        assert uncommitted == []
    staged.publish()
    assert read_all(h.store, staged.sha256) == data


def test_ranged_reads(h: Harness) -> None:
    data = payload(2 * READ_CHUNK + 12_345, seed=2)
    staged = write(h.store, data, piece=MIB // 3)
    staged.publish()
    sha, n = staged.sha256, len(data)
    cases: list[tuple[int, int | None]] = [
        (0, None),
        (0, 10),
        (10, 20),
        (5, 5),
        (7, 3),
        (READ_CHUNK - 1, READ_CHUNK + 1),
        (100, 2 * READ_CHUNK + 100),
        (n - 1, None),
        (n - 1, n + 100),
        (n - 1, n),
        (n, None),
        (n + 10, None),
        (n + 10, n + 20),
    ]
    for start, end in cases:
        chunks = list(h.store.read(sha, start, end))
        expected = data[start:end] if end is None or end > start else b""
        assert b"".join(chunks) == expected, (start, end)
        assert all(0 < len(c) <= READ_CHUNK for c in chunks), (start, end)
    assert read_all(h.store, sha) == data


def test_not_visible_before_publish(h: Harness) -> None:
    data = payload(50_000, seed=3)
    staged = write(h.store, data)
    assert not h.store.exists(staged.sha256)
    assert h.objects() == []
    if isinstance(h.store, LocalBlobStore):
        assert not h.store.path_for(staged.sha256).exists()
    assert len(h.staging()) == 1
    with pytest.raises(FileNotFoundError):
        read_all(h.store, staged.sha256)
    staged.publish()
    assert h.store.exists(staged.sha256)
    assert len(h.objects()) == 1
    assert h.staging() == []


def test_publish_of_existing_object_discards_staging(h: Harness) -> None:
    data = payload(70_000, seed=4)
    first, second = write(h.store, data), write(h.store, data)
    assert first.sha256 == second.sha256
    assert len(h.staging()) == 2
    first.publish()
    second.publish()
    assert h.staging() == []
    assert len(h.objects()) == 1
    assert read_all(h.store, first.sha256) == data
    first.publish()  # publishing again is a no-op
    assert len(h.objects()) == 1


def test_discard_leaves_nothing(h: Harness) -> None:
    staged = write(h.store, payload(30_000, seed=5))
    staged.discard()
    staged.discard()
    assert h.staging() == []
    assert h.objects() == []
    assert not h.store.exists(staged.sha256)


def test_discard_after_publish_keeps_object(h: Harness) -> None:
    staged = write(h.store, payload(30_000, seed=6))
    staged.publish()
    staged.discard()
    assert h.store.exists(staged.sha256)
    assert h.staging() == []


def test_abort_leaves_nothing(make: Callable[..., Harness]) -> None:
    h = make(block_size=64 * 1024)
    before_any_block = h.store.writer()
    before_any_block.write(b"x" * 10)
    before_any_block.abort()

    blocks_staged = h.store.writer()
    blocks_staged.write(payload(300_000, seed=7))  # several blocks already sent
    blocks_staged.abort()
    with pytest.raises(RuntimeError):
        blocks_staged.write(b"more")
    with pytest.raises(RuntimeError):
        blocks_staged.finish()

    finished = h.store.writer()
    finished.write(b"finished but never published")
    finished.finish()
    finished.abort()

    assert h.staging() == []
    assert h.objects() == []
    if h.container is not None:  # Azurite also lists blobs with only uncommitted blocks
        assert list(h.container.list_blobs(include=["uncommittedblobs"])) == []


def test_delete_is_idempotent(h: Harness) -> None:
    data = payload(10_000, seed=8)
    staged = write(h.store, data)
    staged.publish()
    h.store.delete(staged.sha256)
    assert not h.store.exists(staged.sha256)
    h.store.delete(staged.sha256)
    h.store.delete(hashlib.sha256(b"never stored").hexdigest())
    assert h.objects() == []
    with pytest.raises(FileNotFoundError):
        read_all(h.store, staged.sha256)


@pytest.mark.parametrize(
    "key",
    ["", "abc", "A" * 64, "g" * 64, "0" * 63, "0" * 65, "../" + "0" * 61, "0" * 62 + "/x"],
)
def test_invalid_key_is_refused(h: Harness, key: str) -> None:
    with pytest.raises(ValueError):
        h.store.exists(key)
    with pytest.raises(ValueError):
        read_all(h.store, key)
    with pytest.raises(ValueError):
        h.store.delete(key)


def test_missing_object(h: Harness) -> None:
    sha = hashlib.sha256(b"absent").hexdigest()
    assert not h.store.exists(sha)
    with pytest.raises(FileNotFoundError):
        read_all(h.store, sha)
    with pytest.raises(FileNotFoundError):
        read_all(h.store, sha, 5, 5)


def test_sweep_staging_removes_staged_writes_older_than_the_cutoff(h: Harness) -> None:
    assert h.store.sweep_staging(datetime.now(UTC)) == 0  # nothing staged (Azure: no container)
    staged = write(h.store, b"abandoned after hashing")
    assert len(h.staging()) == 1
    assert h.store.sweep_staging(datetime.now(UTC) - timedelta(hours=1)) == 0  # too young
    assert h.store.sweep_staging(datetime.now(UTC) + timedelta(minutes=1)) == 1
    assert h.staging() == []
    assert not h.store.exists(staged.sha256)


def test_publishing_new_bytes_journals_them_first(h: Harness) -> None:
    """The lifecycle sweep finds bytes a failed transaction published through the journal."""
    later = datetime.now(UTC) + timedelta(minutes=1)
    assert h.store.journaled(later) == []  # nothing yet (Azure: no container)
    staged = write(h.store, payload(20_000, seed=10))
    assert h.store.journaled(later) == []  # staging alone writes no entry
    staged.publish()
    ((entry, sha),) = h.store.journaled(later)
    assert sha == staged.sha256
    assert h.store.journaled(datetime.now(UTC) - timedelta(hours=1)) == []  # too young
    again = write(h.store, payload(20_000, seed=10))
    again.publish()  # already there: discarded, nothing journaled
    assert len(h.store.journaled(later)) == 1
    h.store.unjournal(entry)
    h.store.unjournal(entry)  # idempotent
    assert h.store.journaled(later) == []
    assert h.store.exists(sha)  # the journal is only a note: the bytes stay
    with pytest.raises(ValueError):
        h.store.unjournal("../" + entry)


def test_persist_journals_outside_the_write_lock(h: Harness) -> None:
    later = datetime.now(UTC) + timedelta(minutes=1)
    staged = write(h.store, payload(5_000, seed=11))
    staged.persist()
    assert [sha for _, sha in h.store.journaled(later)] == [staged.sha256]
    staged.publish()  # journaled a moment ago: no second entry
    assert len(h.store.journaled(later)) == 1
    staged.discard()
    assert h.store.exists(staged.sha256)


def test_persist_many_journals_each_and_publishes_alike(h: Harness) -> None:
    later = datetime.now(UTC) + timedelta(minutes=1)
    datas = [payload(3_000, seed=20 + i) for i in range(3)]
    staged = [write(h.store, data) for data in datas]
    h.store.persist_many(staged)
    assert sorted(sha for _, sha in h.store.journaled(later)) == sorted(b.sha256 for b in staged)
    for blob, data in zip(staged, datas, strict=True):
        blob.publish()  # journaled a moment ago: no second entry
        assert read_all(h.store, blob.sha256) == data
    assert len(h.store.journaled(later)) == 3
    assert h.staging() == []
    h.store.persist_many([])  # nothing to do


def test_local_persist_many_shares_the_journal_sync(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A document's chunks or a generation's atoms: one sync of the journal folder for all,
    each fan-out folder synced once, and the bytes before their entries before their names."""
    store = LocalBlobStore(tmp_path / "blobs")
    events: list[tuple[str, Path]] = []
    real_fsync, real_link = os.fsync, os.link

    def fsync(fd: int) -> None:
        events.append(("fsync", Path(os.readlink(f"/proc/self/fd/{fd}"))))
        real_fsync(fd)

    def link(src: Any, dst: Any) -> None:
        events.append(("link", Path(dst)))
        real_link(src, dst)

    staged = [write(store, f"chunk {i}".encode()) for i in range(5)]
    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "link", link)
    store.persist_many(staged)
    kinds = [kind if path != store.journal_dir else "journal" for kind, path in events]
    assert kinds.count("journal") == 1
    last_byte_sync = max(i for i, (k, p) in enumerate(events) if p.parent == store.staging)
    assert last_byte_sync < kinds.index("journal") < kinds.index("link")
    finals = {store.path_for(b.sha256).parent for b in staged}
    after_links = [p for k, p in events[kinds.index("link") :] if k == "fsync"]
    assert set(after_links) == finals and len(after_links) == len(finals)  # each folder once
    made = [p for k, p in events[kinds.index("journal") + 1 : kinds.index("link")] if k == "fsync"]
    assert len(made) == len(set(made)) and store.objects in made  # new fan-out folders' parents
    assert all(store.exists(b.sha256) for b in staged)


@pytest.fixture
def syncs(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """The folders the local store fsyncs, in order (each sync still happens)."""
    import hartonomous.blobs.local as local

    synced: list[Path] = []
    real = local.fsync_dir

    def fsync_dir(path: Path) -> None:
        synced.append(path)
        real(path)

    monkeypatch.setattr(local, "fsync_dir", fsync_dir)
    return synced


def test_local_publish_syncs_a_name_another_writer_may_not_have_synced(
    tmp_path: Path, syncs: list[Path]
) -> None:
    """Writer A links the address outside the lock and syncs its folder after; writer B,
    finding the address there, must not commit on A's unsynced name: while a staging name
    still shares the file, B's publish syncs the folder itself."""
    store = LocalBlobStore(tmp_path / "blobs")
    a = write(store, b"the same bytes")
    final = store.path_for(a.sha256)
    store.make_dirs([final.parent])
    os.link(a._path, final)  # type: ignore[attr-defined]  # A, mid-persist: linked, not synced
    b = write(store, b"the same bytes")
    assert store.exists(b.sha256)  # so B's stage skips persist
    syncs.clear()
    b.publish()
    assert syncs == [final.parent]
    a.discard()  # A done: the address is the file's only name
    c = write(store, b"the same bytes")
    syncs.clear()
    c.publish()
    assert syncs == []  # nothing pending: publishing held bytes stays a stat
    assert read_all(store, a.sha256) == b"the same bytes"


def test_local_store_without_hard_links_publishes_by_rename(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, syncs: list[Path]
) -> None:
    """FAT, exFAT, some SMB mounts: link() fails, persist leaves the name to publish, which
    renames and syncs under the lock as before."""
    store = LocalBlobStore(tmp_path / "blobs")

    def no_links(src: Any, dst: Any) -> None:
        raise OSError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(os, "link", no_links)
    staged = write(store, b"no links here")
    staged.persist()
    assert not store.exists(staged.sha256)
    syncs.clear()
    staged.publish()
    assert read_all(store, staged.sha256) == b"no links here"
    assert syncs[-1] == store.path_for(staged.sha256).parent
    assert list(store.staging.iterdir()) == []


def test_local_publish_fsyncs_the_directories_it_changes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A new name is durable only once its directory is fsynced, and a new fan-out directory
    only once its parent is: both before publish returns (that is, before the commit), and
    the journal entry before the name."""
    import hartonomous.blobs.local as local

    store = LocalBlobStore(tmp_path / "blobs")
    events: list[tuple[str, Path]] = []
    real_link = os.link

    def link(src: Any, dst: Any) -> None:
        events.append(("link", Path(dst)))
        real_link(src, dst)

    monkeypatch.setattr(local, "fsync_dir", lambda path: events.append(("fsync", path)))
    monkeypatch.setattr(os, "link", link)
    staged = write(store, b"durable name")
    staged.publish()
    final = store.path_for(staged.sha256)
    assert events.index(("fsync", store.journal_dir)) < events.index(("link", final))
    assert events[-1] == ("fsync", final.parent)  # after the link
    assert ("fsync", store.objects) in events  # objects/ab was created
    assert ("fsync", final.parent.parent) in events  # objects/ab/cd was created
    assert store.exists(staged.sha256) and list(store.staging.iterdir()) == []


def test_local_persist_leaves_publish_nothing_to_sync(tmp_path: Path, syncs: list[Path]) -> None:
    """persist runs outside the write lock and does every fsync; publish, under the lock, is a
    stat and an unlink. Bytes deleted between the two (a sweep collected an earlier copy of
    them) are linked and synced again from the staging file."""
    store = LocalBlobStore(tmp_path / "blobs")
    staged = write(store, b"persisted outside the lock")
    staged.persist()
    final = store.path_for(staged.sha256)
    assert syncs[-1] == final.parent and store.exists(staged.sha256)
    syncs.clear()
    staged.publish()
    assert syncs == []
    assert final.read_bytes() == b"persisted outside the lock"
    assert list(store.staging.iterdir()) == []

    again = write(store, b"deleted in between")
    again.persist()
    store.delete(again.sha256)
    syncs.clear()
    again.publish()
    assert syncs == [store.path_for(again.sha256).parent]
    assert read_all(store, again.sha256) == b"deleted in between"
    assert list(store.staging.iterdir()) == []


# -- Azure specifics --------------------------------------------------------------------------


@pytest.fixture
def azure(azurite_blob: str) -> Iterator[Callable[..., Harness]]:
    made: list[Harness] = []

    def factory(block_size: int = MIB) -> Harness:
        made.append(_azure(azurite_blob, block_size))
        return made[-1]

    yield factory
    for h in made:
        assert h.container is not None
        if h.container.exists():
            h.container.delete_container()


@pytest.mark.azurite
def test_azure_container_created_lazily_on_first_write(azure: Callable[..., Harness]) -> None:
    h = azure(block_size=1024)
    assert h.container is not None
    assert not h.container.exists()
    assert not h.store.exists(hashlib.sha256(b"").hexdigest())  # reads do not create it
    w = h.store.writer()
    w.write(b"y" * 100)  # still buffered
    assert not h.container.exists()
    w.write(b"y" * 2000)  # a block is sent
    assert h.container.exists()
    w.finish().publish()


@pytest.mark.azurite
def test_azure_memory_stays_bounded(azure: Callable[..., Harness]) -> None:
    """64 MiB through 4 MiB blocks: traced peak must stay far below the blob's size."""
    h = azure(block_size=4 * MIB)
    total, piece = 64 * MIB, MIB
    rng = random.Random(9)
    expected = hashlib.sha256()
    w = h.store.writer()
    w.write(b"warm-up")  # let the SDK build its pipeline before measuring
    expected.update(b"warm-up")
    tracemalloc.start()
    try:
        for _ in range(total // piece):
            chunk = rng.randbytes(piece)
            expected.update(chunk)
            w.write(chunk)
            del chunk
        staged = w.finish()
        _, write_peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert staged.sha256 == expected.hexdigest()
    assert staged.size == total + len(b"warm-up")
    assert write_peak < 24 * MIB, f"writer peak {write_peak / MIB:.1f} MiB"
    staged.publish()

    tracemalloc.start()
    try:
        check = hashlib.sha256()
        for chunk in h.store.read(staged.sha256):
            check.update(chunk)
        _, read_peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert check.hexdigest() == staged.sha256
    assert read_peak < 24 * MIB, f"reader peak {read_peak / MIB:.1f} MiB"


@pytest.mark.azurite
def test_azure_failed_block_upload_poisons_the_writer(
    azure: Callable[..., Harness], monkeypatch: pytest.MonkeyPatch
) -> None:
    """After a failed Put Block the digest covers bytes Azure never got: no commit allowed."""
    h = azure(block_size=1024)
    real_stage = BlobClient.stage_block
    calls = [0]

    def flaky_stage(self: BlobClient, *args: Any, **kw: Any) -> Any:
        calls[0] += 1
        if calls[0] == 2:
            raise HttpResponseError(message="injected")
        return real_stage(self, *args, **kw)

    monkeypatch.setattr(BlobClient, "stage_block", flaky_stage)
    w = h.store.writer()
    with pytest.raises(HttpResponseError):
        w.write(b"z" * 5000)
    with pytest.raises(RuntimeError):
        w.write(b"z")
    with pytest.raises(RuntimeError):
        w.finish()
    w.abort()
    assert h.staging() == []
    assert h.container is not None
    assert list(h.container.list_blobs(include=["uncommittedblobs"])) == []


def _pretend_copy_pending(
    monkeypatch: pytest.MonkeyPatch, sha: str, pending_reads: list[int]
) -> None:
    """Azurite completes copies synchronously; fake a pending one on the object's blob."""
    real_props = BlobClient.get_blob_properties
    real_download = BlobClient.download_blob

    def pending(client: BlobClient) -> bool:
        if not client.blob_name.endswith(sha):
            return False
        if pending_reads[0] == 0:
            return False
        pending_reads[0] -= 1
        return True

    def get_blob_properties(self: BlobClient, **kw: Any) -> Any:
        props = real_props(self, **kw)
        if pending(self):
            props.copy.status = "pending"
        return props

    def download_blob(self: BlobClient, *args: Any, **kw: Any) -> Any:
        dl = real_download(self, *args, **kw)
        if pending(self):
            dl.properties.copy.status = "pending"
        return dl

    monkeypatch.setattr(BlobClient, "get_blob_properties", get_blob_properties)
    monkeypatch.setattr(BlobClient, "download_blob", download_blob)


@pytest.mark.azurite
def test_azure_pending_copy_is_invisible_and_waited_for(
    azure: Callable[..., Harness], monkeypatch: pytest.MonkeyPatch
) -> None:
    h = azure()
    assert isinstance(h.store, AzureBlobStore)
    data = payload(5_000, seed=10)
    staged = write(h.store, data)
    staged.publish()

    _pretend_copy_pending(monkeypatch, staged.sha256, [10**9])
    assert not h.store.exists(staged.sha256)
    with pytest.raises(FileNotFoundError):
        read_all(h.store, staged.sha256)

    # A second publisher of the same bytes times out on a copy that never settles...
    h.store.copy_timeout = 0.2
    again = write(h.store, data)
    with pytest.raises(TimeoutError):
        again.publish()
    assert len(h.staging()) == 1  # ...and keeps its staging blob for a retry or discard.

    # ...and waits for one that settles after a few polls, then drops its own copy.
    monkeypatch.undo()
    _pretend_copy_pending(monkeypatch, staged.sha256, [3])
    h.store.copy_timeout = 30
    again.publish()
    assert h.staging() == []
    assert h.store.exists(staged.sha256)
    assert read_all(h.store, staged.sha256) == data


def test_from_account_url_without_azure_identity(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "azure.identity", None)  # makes the import fail
    with pytest.raises(RuntimeError, match="pip install azure-identity"):
        AzureBlobStore.from_account_url("https://example.blob.core.windows.net", "c")


def test_azure_rejects_bad_block_size() -> None:
    client = ContainerClient("https://example.blob.core.windows.net", "c")
    for bad in (0, -1, 4001 * MIB):
        with pytest.raises(ValueError):
            AzureBlobStore(client, block_size=bad)


@pytest.mark.azurite
def test_from_connection_string(azurite_blob: str) -> None:
    name = f"t{uuid.uuid4().hex[:24]}"
    store = AzureBlobStore.from_connection_string(azurite_blob, name, block_size=2 * MIB)
    try:
        assert store.block_size == 2 * MIB
        staged = write(store, b"hello")
        staged.publish()
        assert read_all(store, staged.sha256) == b"hello"
    finally:
        store.container.delete_container()
