"""Blobs are never lost or leaked: a put or delete that fails after any step, on the local
folder and on Azurite, never leaves an atom without its bytes, and one sweep removes every
byte no atom references. Real SQLite, real blob stores; the faults are injected around them."""

from __future__ import annotations

import hashlib
import subprocess
import sys
import textwrap
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from azure.storage.blob import ContainerClient

from hartonomous.blobs.azure import AzureBlobStore
from hartonomous.blobs.local import LocalBlobStore
from hartonomous.bootstrap import Platform, bootstrap
from hartonomous.ports import BlobStore, UnitOfWork
from hartonomous.services import tenants as tenant_service
from hartonomous.services.atoms import AtomService
from hartonomous.services.blob_lifecycle import BlobLifecycle
from hartonomous.settings import Settings
from hartonomous.store.engine import Engines
from hartonomous.store.schema import atoms, blob_deletions, blobs
from hartonomous.workflows.runtime import LocalWorkflowRuntime

NOW_TOO = timedelta(seconds=-5)  # a grace that lets the sweep take entries written just now


class Injected(Exception):
    """The fault: raised right after the step it counts."""


class Faults:
    def __init__(self, fail_after: int | None = None) -> None:
        self.fail_after = fail_after
        self.steps: list[str] = []

    def step(self, what: str) -> None:
        self.steps.append(what)
        if len(self.steps) == self.fail_after:
            raise Injected(what)


class _Counted:
    """Delegates to ``inner``; every method call is a step once it has returned."""

    def __init__(self, inner: Any, faults: Faults, name: str) -> None:
        self._inner, self._faults, self._name = inner, faults, name

    def __getattr__(self, attr: str) -> Any:
        value = getattr(self._inner, attr)
        if not callable(value):
            return value

        def call(*args: Any, **kw: Any) -> Any:
            result = value(*args, **kw)
            self._faults.step(f"{self._name}.{attr}")
            return result

        return call


class FaultyUnitOfWork:
    """A write unit of work whose repositories and commit count as steps."""

    def __init__(self, inner: UnitOfWork, faults: Faults) -> None:
        self._inner, self._faults = inner, faults

    def __enter__(self) -> FaultyUnitOfWork:
        self._inner.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._inner.__exit__(*exc)

    def __getattr__(self, name: str) -> Any:
        return _Counted(getattr(self._inner, name), self._faults, name)

    def commit(self) -> None:
        self._inner.commit()
        self._faults.step("commit")  # failing here: the commit landed, its reply did not


class FaultyStaged(_Counted):
    @property
    def sha256(self) -> str:
        return str(self._inner.sha256)

    @property
    def size(self) -> int:
        return int(self._inner.size)


class FaultyWriter(_Counted):
    def finish(self) -> FaultyStaged:
        return FaultyStaged(self._inner.finish(), self._faults, "staged")


class FaultyBlobs(_Counted):
    def writer(self) -> FaultyWriter:
        return FaultyWriter(self._inner.writer(), self._faults, "writer")


@dataclass
class World:
    kind: str
    platform: Platform
    objects: Callable[[], set[str]]
    alice: str
    bob: str

    @property
    def engines(self) -> Engines:
        return self.platform.engines

    @property
    def blobs(self) -> BlobStore:
        return self.platform.blobs

    def uow(self, *, write: bool, tenant_id: str | None = None) -> UnitOfWork:
        return self.platform.uow_factory(write=write, tenant_id=tenant_id)

    def service(self, faults: Faults | None = None) -> AtomService:
        if faults is None:
            return AtomService(uow_factory=self.uow, blobs=self.blobs, max_upload_bytes=1 << 20)

        def factory(*, write: bool, tenant_id: str | None = None) -> Any:
            inner = self.uow(write=write, tenant_id=tenant_id)
            return FaultyUnitOfWork(inner, faults) if write else inner

        return AtomService(
            uow_factory=factory,
            blobs=FaultyBlobs(self.blobs, faults, "blobs"),
            max_upload_bytes=1 << 20,
        )

    def sweep(self) -> None:
        BlobLifecycle(self.uow, self.blobs).sweep(grace=NOW_TOO)

    def rows(self) -> tuple[list[Any], dict[str, int], int]:
        with self.engines.read.connect() as conn:
            atom_rows = list(conn.execute(sa.select(atoms.c.id, atoms.c.sha256)))
            counts = dict(conn.execute(sa.select(blobs.c.sha256, blobs.c.refcount)).all())
            queued = conn.execute(sa.select(sa.func.count()).select_from(blob_deletions))
            return atom_rows, {k: int(v) for k, v in counts.items()}, int(queued.scalar_one())

    def check_no_atom_lacks_bytes(self) -> None:
        atom_rows, counts, _ = self.rows()
        for atom_id, sha in atom_rows:
            assert self.blobs.exists(sha), f"atom {atom_id} lost its bytes"
        per_sha: dict[str, int] = {}
        for _, sha in atom_rows:
            per_sha[sha] = per_sha.get(sha, 0) + 1
        assert counts == per_sha  # reference counts stay exact

    def check_nothing_leaked(self) -> None:
        atom_rows, _, queued = self.rows()
        assert self.objects() == {sha for _, sha in atom_rows}
        assert queued == 0
        assert self.blobs.journaled(datetime.now(UTC) + timedelta(days=1)) == []


def _make_world(kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[World]:
    container: ContainerClient | None = None
    store: BlobStore
    if kind == "local":
        local = LocalBlobStore(tmp_path / "blobs")
        store = local

        def objects() -> set[str]:
            return {p.name for p in local.objects.rglob("*") if p.is_file()}

    else:
        container = ContainerClient.from_connection_string(
            request.getfixturevalue("azurite_blob"), container_name=f"t{uuid.uuid4().hex[:24]}"
        )
        store = AzureBlobStore(container)

        def objects() -> set[str]:
            assert container is not None
            if not container.exists():
                return set()
            return {b.name.rsplit("/", 1)[1] for b in container.list_blobs("objects/")}

    platform = bootstrap(Settings(data_dir=tmp_path / "data"), blobs=store)
    alice, _ = tenant_service.create_tenant(platform.uow_factory, name="alice")
    bob, _ = tenant_service.create_tenant(platform.uow_factory, name="bob")
    yield World(kind, platform, objects, alice.id, bob.id)
    platform.close()
    if container is not None and container.exists():
        container.delete_container()


@pytest.fixture(params=["local", pytest.param("azure", marks=pytest.mark.azurite)])
def world(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[World]:
    yield from _make_world(request.param, tmp_path, request)


# -- fault injection ------------------------------------------------------------------------------


def _put(w: World, svc: AtomService, tenant: str, data: bytes) -> None:
    svc.store_bytes(tenant_id=tenant, chunks=[data], media_type="text/plain")


def _atom_of(w: World, tenant: str, data: bytes) -> str:
    stored = w.service().store_bytes(tenant_id=tenant, chunks=[data], media_type="text/plain")
    return stored.atom.id


Scenario = Callable[[World, bytes], Callable[[AtomService], None]]


def new_bytes(w: World, data: bytes) -> Callable[[AtomService], None]:
    return lambda svc: _put(w, svc, w.alice, data)


def bytes_another_tenant_holds(w: World, data: bytes) -> Callable[[AtomService], None]:
    _atom_of(w, w.bob, data)
    return lambda svc: _put(w, svc, w.alice, data)


def bytes_queued_for_deletion(w: World, data: bytes) -> Callable[[AtomService], None]:
    w.service().delete(tenant_id=w.bob, atom_id=_atom_of(w, w.bob, data))  # not swept yet
    return lambda svc: _put(w, svc, w.alice, data)


def delete_last_reference(w: World, data: bytes) -> Callable[[AtomService], None]:
    atom_id = _atom_of(w, w.alice, data)
    return lambda svc: svc.delete(tenant_id=w.alice, atom_id=atom_id)


def delete_shared_bytes(w: World, data: bytes) -> Callable[[AtomService], None]:
    _atom_of(w, w.bob, data)
    atom_id = _atom_of(w, w.alice, data)
    return lambda svc: svc.delete(tenant_id=w.alice, atom_id=atom_id)


@pytest.mark.parametrize(
    "scenario",
    [
        new_bytes,
        bytes_another_tenant_holds,
        bytes_queued_for_deletion,
        delete_last_reference,
        delete_shared_bytes,
    ],
)
def test_a_failure_after_any_step_loses_and_leaks_nothing(world: World, scenario: Scenario):
    injected = []
    for n in range(1, 40):
        data = f"{scenario.__name__} failing after step {n}".encode()
        operation = scenario(world, data)
        faults = Faults(fail_after=n)
        try:
            operation(world.service(faults))
        except Injected as exc:
            injected.append(str(exc))
        else:
            break
        finally:
            world.check_no_atom_lacks_bytes()
        world.sweep()  # one sweep: every byte no atom references is gone
        world.check_no_atom_lacks_bytes()
        world.check_nothing_leaked()
    else:
        pytest.fail("the operation never completed")
    assert "commit" in injected  # the last step: committed, then failed
    world.sweep()
    world.check_nothing_leaked()


def test_a_sweep_that_fails_after_any_step_loses_and_leaks_nothing(world: World):
    """The sweep itself dies after claiming, after deleting bytes (before its commit), after
    settling, after committing, after unjournaling: no atom lacks its bytes, and the next
    sweep leaves no unreferenced bytes."""
    injected: list[str] = []
    for n in range(1, 60):
        svc = world.service()
        gone = svc.store_bytes(tenant_id=world.alice, chunks=[b"gone %d" % n], media_type=None)
        svc.delete(tenant_id=world.alice, atom_id=gone.atom.id)  # queued for deletion
        back = svc.store_bytes(tenant_id=world.alice, chunks=[b"back %d" % n], media_type=None)
        svc.delete(tenant_id=world.alice, atom_id=back.atom.id)
        svc.store_bytes(tenant_id=world.bob, chunks=[b"back %d" % n], media_type=None)
        orphan = svc.stage(b"orphan %d" % n)  # published by a transaction that then failed
        orphan.publish()
        orphan.discard()
        faults = Faults(fail_after=n)

        def factory(*, write: bool, tenant_id: str | None = None, f: Faults = faults) -> Any:
            inner = world.uow(write=write, tenant_id=tenant_id)
            return FaultyUnitOfWork(inner, f) if write else inner

        store = _Counted(world.blobs, faults, "store")
        try:
            BlobLifecycle(factory, store).sweep(grace=NOW_TOO)
        except Injected:
            pass  # a failed delete is caught by the sweep itself (kept for the next one)
        finally:
            world.check_no_atom_lacks_bytes()
        if len(faults.steps) < n:
            break  # the sweep has fewer steps: every one has failed once
        injected.append(faults.steps[n - 1])
        world.sweep()
        world.check_no_atom_lacks_bytes()
        world.check_nothing_leaked()
    else:
        pytest.fail("the sweep never completed")
    for step in ("blobs.claim", "store.delete", "blobs.settle", "commit", "store.unjournal"):
        assert step in injected, (step, injected)
    world.check_nothing_leaked()


def test_bytes_acquired_again_before_the_sweep_survive_it(world: World):
    svc = world.service()
    first = svc.store_bytes(tenant_id=world.alice, chunks=[b"come back"], media_type=None)
    svc.delete(tenant_id=world.alice, atom_id=first.atom.id)
    assert world.blobs.exists(first.atom.sha256)  # deleted only after the commit, by a sweep
    again = svc.store_bytes(tenant_id=world.bob, chunks=[b"come back"], media_type=None)
    report = BlobLifecycle(world.uow, world.blobs).sweep(grace=NOW_TOO)
    assert report.deleted == 0 and report.kept >= 1
    assert b"".join(svc.read(again.atom)) == b"come back"
    svc.delete(tenant_id=world.bob, atom_id=again.atom.id)
    assert BlobLifecycle(world.uow, world.blobs).sweep(grace=NOW_TOO).deleted == 1
    assert not world.blobs.exists(first.atom.sha256)
    world.check_nothing_leaked()


def test_young_journal_entries_wait_for_the_grace(world: World):
    """A publication younger than the grace may belong to a transaction still running."""
    world.service().store_bytes(tenant_id=world.alice, chunks=[b"committed"], media_type=None)
    # Published, then the transaction fails: the bytes are visible with no atom.
    staged = world.service().stage(b"orphan")
    staged.publish()
    staged.discard()
    lifecycle = BlobLifecycle(world.uow, world.blobs)
    assert lifecycle.sweep().deleted == 0  # the default grace: an hour
    assert world.blobs.exists(staged.sha256)
    assert lifecycle.sweep(grace=NOW_TOO).deleted == 1
    assert not world.blobs.exists(staged.sha256)
    world.check_no_atom_lacks_bytes()
    world.check_nothing_leaked()


def test_sweeps_racing_deletes_and_uploads_never_lose_bytes(
    tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """The sweep's claim holds the write lock while it deletes: an upload of the same bytes
    either lands before (kept) or after (publishes its own copy)."""
    w = next(_make_world("local", tmp_path, request))
    svc = w.service()
    stop = threading.Event()
    errors: list[BaseException] = []

    def sweeper() -> None:
        try:
            while not stop.is_set():
                w.sweep()
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    thread = threading.Thread(target=sweeper)
    thread.start()
    try:
        for i in range(60):
            stored = svc.store_bytes(tenant_id=w.alice, chunks=[b"contended"], media_type=None)
            assert b"".join(svc.read(stored.atom)) == b"contended", f"round {i}"
            svc.delete(tenant_id=w.alice, atom_id=stored.atom.id)
    finally:
        stop.set()
        thread.join()
    assert errors == []
    w.sweep()
    w.check_nothing_leaked()
    w.platform.close()


# -- staging a crash left behind ------------------------------------------------------------------

CHILD = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from hartonomous.blobs.local import LocalBlobStore

    store = LocalBlobStore(Path(sys.argv[1]))
    unfinished = store.writer()
    unfinished.write(b"x" * 100_000)
    finished = store.writer()
    finished.write(b"hashed, never published")
    staged = finished.finish()
    print("ready", flush=True)
    time.sleep(120)
    """
)


def test_staging_files_of_a_killed_process_are_swept_at_start_up(tmp_path: Path):
    root = tmp_path / "blobs"
    mine = LocalBlobStore(root)
    live = mine.writer()
    live.write(b"this process is alive and still writing")
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(root)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "ready"
        assert len(list(mine.staging.iterdir())) == 3
        (theirs,) = {p.name.split(".")[0] for p in mine.staging.iterdir()} - {mine.owner_token}
        # While the child lives, a new store (another process starting) leaves its files.
        assert LocalBlobStore(root).abandoned_at_start == 0
        assert len(list(mine.staging.iterdir())) == 3
    finally:
        child.kill()
        child.wait()
    restarted = LocalBlobStore(root)
    assert restarted.abandoned_at_start == 2
    assert [p.name.split(".")[0] for p in mine.staging.iterdir()] == [mine.owner_token]
    assert not [p for p in mine.owners.iterdir() if p.name.startswith(theirs)]
    assert (mine.owners / f"{restarted.owner_token}.lock").exists()
    staged = live.finish()
    staged.publish()  # the live write was never touched
    assert b"".join(mine.read(staged.sha256)) == b"this process is alive and still writing"


UPLOAD_CHILD = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from hartonomous.blobs.local import LocalBlobStore
    from hartonomous.blobs.upload_staging import LocalUploadStaging

    staging = LocalUploadStaging(LocalBlobStore(Path(sys.argv[1])))
    unfinished = staging.writer("tenant", "upload-of-the-killed")
    unfinished.write(b"x" * 100_000)
    print("ready", flush=True)
    time.sleep(120)
    """
)


def test_upload_session_writes_of_a_killed_process_are_swept_at_start_up(tmp_path: Path):
    """A PUT to an upload session that a kill interrupted leaves ``uploads/<id>.*.tmp``: the
    next process to build the staging removes it, never a live process's write."""
    from hartonomous.blobs.upload_staging import LocalUploadStaging

    root = tmp_path / "blobs"
    mine = LocalUploadStaging(LocalBlobStore(root))
    live = mine.writer("tenant", "upload-still-running")
    live.write(b"this process is alive")
    child = subprocess.Popen(
        [sys.executable, "-c", UPLOAD_CHILD, str(root)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "ready"
        assert len(list(mine.root.glob("*.tmp"))) == 2
        assert LocalUploadStaging(LocalBlobStore(root)).abandoned_at_start == 0  # it lives
    finally:
        child.kill()
        child.wait()
    restarted = LocalUploadStaging(LocalBlobStore(root))
    assert restarted.abandoned_at_start == 1
    assert [p.name.split(".")[0] for p in mine.root.glob("*.tmp")] == ["upload-still-running"]
    live.finish()
    assert mine.received("tenant", "upload-still-running") == len(b"this process is alive")


def test_the_local_world_collects_blobs_once_at_start_up(
    tmp_path: Path, request: pytest.FixtureRequest
):
    """Bytes of atoms deleted before a stop go when ``hartonomous serve`` starts again, not
    at the first 5-minute tick of the collect_blobs timer."""
    w = next(_make_world("local", tmp_path, request))
    svc = w.service()
    stored = svc.store_bytes(
        tenant_id=w.alice, chunks=[b"deleted before the restart"], media_type=None
    )
    svc.delete(tenant_id=w.alice, atom_id=stored.atom.id)
    assert w.blobs.exists(stored.atom.sha256)
    # The local world (``hartonomous serve``): a workflow host and timers, here with none.
    w.platform.workflows = LocalWorkflowRuntime.build(w.engines, [], activity_workers=1)
    w.platform.start_background()
    try:
        thread = w.platform._collection
        assert thread is not None
        thread.join(30)
        assert not w.blobs.exists(stored.atom.sha256)
        assert w.rows()[2] == 0  # the deletion queue is empty
    finally:
        w.platform.close()


def test_staging_many_persists_new_bytes_together_and_cleans_up_on_failure(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``stage_many``: new bytes persisted (journaled, at their address), bytes already held
    only staged, the same bytes twice fine; a failure part-way removes every staging file."""
    p = bootstrap(Settings(data_dir=tmp_path / "data"))
    try:
        store = p.atoms.blobs
        assert isinstance(store, LocalBlobStore)
        held = p.atoms.stage_many([b"held already"])[0]
        held.publish()
        later = datetime.now(UTC) + timedelta(minutes=1)
        before = len(store.journaled(later))
        staged = p.atoms.stage_many([b"new one", b"held already", b"new one", b"new two"])
        assert [s.sha256 for s in staged][1] == held.sha256
        assert len(store.journaled(later)) == before + 3  # per new staged blob ("new one" twice)
        assert all(store.exists(s.sha256) for s in staged)
        for blob in staged:
            blob.discard()
        assert list(store.staging.iterdir()) == []

        writes = 0
        real_writer = store.writer

        def failing_writer() -> Any:
            nonlocal writes
            writes += 1
            if writes == 3:
                raise OSError("disk full")
            return real_writer()

        monkeypatch.setattr(store, "writer", failing_writer)
        with pytest.raises(OSError, match="disk full"):
            p.atoms.stage_many([b"a", b"b", b"c"])
        assert list(store.staging.iterdir()) == []  # the two staged before it are gone too
        assert not store.exists(hashlib.sha256(b"a").hexdigest())  # nothing persisted
    finally:
        p.close()
