"""Concurrent writers on the real SQLite store: dedup and reference counts stay exact."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

import pytest

from hartonomous.bootstrap import Platform
from hartonomous.errors import NotFound
from hartonomous.services.maintenance import collect_blobs
from hartonomous.store.repositories import WriteConflict


def test_concurrent_uploads_of_the_same_bytes_make_one_atom(platform: Platform, alice):
    data = b"raced bytes" * 1000
    barrier = threading.Barrier(8)

    def upload(_: int):
        barrier.wait()
        return platform.atoms.store_bytes(
            tenant_id=alice.id, chunks=[data[:5000], data[5000:]], media_type="text/plain"
        )

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(upload, range(8)))
    assert len({r.atom.id for r in results}) == 1
    assert sorted(r.deduplicated for r in results) == [False] + [True] * 7
    with platform.uow_factory(write=False) as uow:
        assert uow.blobs.totals() == (1, len(data))
    assert list((platform.settings.resolved_blob_dir / "staging").iterdir()) == []


def test_delete_racing_uploads_of_the_same_bytes_never_loses_bytes(platform: Platform, alice, bob):
    """Bob deletes and re-uploads while Alice uploads: every surviving atom can be read."""
    data = b"contended content"
    for round_ in range(20):
        bobs = platform.atoms.store_bytes(tenant_id=bob.id, chunks=[data], media_type=None)
        barrier = threading.Barrier(2)

        def delete_bobs(barrier: threading.Barrier = barrier, atom_id: str = bobs.atom.id) -> None:
            barrier.wait()
            platform.atoms.delete(tenant_id=bob.id, atom_id=atom_id)

        def upload_alices(barrier: threading.Barrier = barrier) -> str:
            barrier.wait()
            return platform.atoms.store_bytes(
                tenant_id=alice.id, chunks=[data], media_type=None
            ).atom.id

        with ThreadPoolExecutor(2) as pool:
            deleted = pool.submit(delete_bobs)
            alices_id = pool.submit(upload_alices).result()
            deleted.result()
        atom = platform.atoms.get(tenant_id=alice.id, atom_id=alices_id)
        assert b"".join(platform.atoms.read(atom)) == data, f"round {round_}"
        platform.atoms.delete(tenant_id=alice.id, atom_id=alices_id)
        with pytest.raises(NotFound):
            platform.atoms.get(tenant_id=alice.id, atom_id=alices_id)
        collect_blobs(platform.uow_factory, platform.blobs)  # deleted after the commit
        assert not platform.blobs.exists(atom.sha256)


def test_a_duplicate_insert_is_a_write_conflict_and_the_service_retries(
    platform: Platform, alice, monkeypatch
):
    """What Azure SQL does when two transactions insert the same row: retried, not a 500."""
    first = platform.atoms.store_bytes(tenant_id=alice.id, chunks=[b"once"], media_type=None)
    with platform.uow_factory(write=True) as uow, pytest.raises(WriteConflict):
        uow.atoms.add(replace(first.atom, id="another-id"))

    real_record = platform.atoms._record
    calls: list[int] = []

    def conflict_once(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise WriteConflict("simulated concurrent insert")
        return real_record(*args, **kwargs)

    monkeypatch.setattr(platform.atoms, "_record", conflict_once)
    stored = platform.atoms.store_bytes(tenant_id=alice.id, chunks=[b"twice"], media_type=None)
    assert len(calls) == 2 and stored.deduplicated is False
    assert b"".join(platform.atoms.read(stored.atom)) == b"twice"
