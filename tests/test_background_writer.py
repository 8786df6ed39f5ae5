"""No usage row is lost: the background writer retries row by row, is bounded, and drains on
close. Real SQLite through the platform's unit of work; faults injected around it."""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import pytest
import sqlalchemy as sa

from hartonomous.bootstrap import Platform
from hartonomous.metering.ledger import Usage
from hartonomous.services.clock import utcnow
from hartonomous.store.background import BackgroundWriter, Write
from hartonomous.store.schema import usage_ledger


class Injected(Exception):
    pass


class FailingCommits:
    """A unit-of-work factory whose commits number ``failing`` raise (1: the first)."""

    def __init__(self, platform: Platform, failing: set[int]) -> None:
        self.platform, self.failing, self.commits = platform, failing, 0

    def __call__(self, *, write: bool, tenant_id: str | None = None) -> Any:
        uow = self.platform.uow_factory(write=write, tenant_id=tenant_id)
        real_commit, factory = uow.commit, self

        def commit() -> None:
            factory.commits += 1
            if factory.commits in factory.failing:
                raise Injected(f"commit {factory.commits}")
            real_commit()

        uow.commit = commit  # type: ignore[method-assign]
        return uow


def usage(tenant_id: str, key: str) -> Write:
    return lambda uow: uow.usage.record(tenant_id, key, [Usage("search.queries", 1, "q")], utcnow())


def keys(platform: Platform) -> set[str]:
    with platform.engines.read.connect() as conn:
        return set(conn.execute(sa.select(usage_ledger.c.key)).scalars())


def test_a_failed_first_commit_loses_no_row(platform: Platform, alice, bob):
    factory = FailingCommits(platform, failing={1})
    writer = BackgroundWriter(factory)
    gate = threading.Event()
    writer.submit(alice.id, lambda uow: gate.wait(5))  # hold the thread: the rest batch up
    expected = set()
    for i in range(40):
        tenant = alice.id if i % 2 else bob.id
        writer.submit(tenant, usage(tenant, f"k{i}"))
        expected.add(f"k{i}")
    gate.set()
    writer.flush()
    assert factory.commits > 1  # the first attempt did fail
    assert keys(platform) == expected
    assert writer.dropped == 0
    writer.close()


def test_a_row_that_keeps_failing_is_logged_and_only_it_is_dropped(
    platform: Platform, alice, caplog: pytest.LogCaptureFixture
):
    writer = BackgroundWriter(platform.uow_factory, backoff=0.01)
    gate = threading.Event()
    writer.submit(alice.id, lambda uow: gate.wait(5))
    poison_key = "poisoned-row"

    def poisoned(uow: Any, key: str = poison_key) -> None:
        raise ValueError(f"cannot write {key}")

    for i in range(10):
        writer.submit(alice.id, usage(alice.id, f"good{i}"))
        if i == 5:
            writer.submit(alice.id, poisoned)
    with caplog.at_level(logging.WARNING, logger="hartonomous.store.background"):
        gate.set()
        writer.flush()
    assert keys(platform) == {f"good{i}" for i in range(10)}
    assert writer.dropped == 1
    dropped = [r for r in caplog.records if "dropping" in r.getMessage()]
    assert len(dropped) == 1 and poison_key in dropped[0].getMessage()
    writer.close()


def test_the_queue_is_bounded_and_a_full_one_pushes_back(platform: Platform, alice):
    """With the thread stuck, submit waits, then writes in the caller: no growth, no loss."""
    gate = threading.Event()

    def factory(*, write: bool, tenant_id: str | None = None) -> Any:
        if threading.current_thread().name == "bounded-writes":
            gate.wait(10)
        return platform.uow_factory(write=write, tenant_id=tenant_id)

    writer = BackgroundWriter(factory, "bounded-writes", maxsize=2, submit_timeout=0.2)
    try:
        writer.submit(alice.id, usage(alice.id, "taken"))  # the thread takes it and waits
        time.sleep(0.1)
        writer.submit(alice.id, usage(alice.id, "q1"))
        writer.submit(alice.id, usage(alice.id, "q2"))
        started = time.monotonic()
        writer.submit(alice.id, usage(alice.id, "inline"))
        assert time.monotonic() - started >= 0.2  # back-pressure first
        assert keys(platform) == {"inline"}  # then written by the caller itself
    finally:
        gate.set()
    writer.flush()
    assert keys(platform) == {"taken", "q1", "q2", "inline"}
    writer.close()


def test_close_drains_the_queue_and_refuses_later_writes(platform: Platform, alice):
    writer = BackgroundWriter(platform.uow_factory)
    gate = threading.Event()
    writer.submit(alice.id, lambda uow: gate.wait(5))
    for i in range(50):
        writer.submit(alice.id, usage(alice.id, f"late{i}"))
    threading.Timer(0.2, gate.set).start()
    writer.close()
    assert keys(platform) == {f"late{i}" for i in range(50)}
    with pytest.raises(RuntimeError, match="closed"):
        writer.submit(alice.id, usage(alice.id, "after"))


def locked(statement: str = "INSERT") -> sa.exc.OperationalError:
    return sa.exc.OperationalError(statement, {}, Exception("database is locked"))


class LockedFor:
    """A factory whose commits fail as a locked database does, for ``seconds``."""

    def __init__(self, platform: Platform, seconds: float) -> None:
        self.platform, self.until, self.failures = platform, time.monotonic() + seconds, 0

    def __call__(self, *, write: bool, tenant_id: str | None = None) -> Any:
        uow = self.platform.uow_factory(write=write, tenant_id=tenant_id)
        real_commit, factory = uow.commit, self

        def commit() -> None:
            if time.monotonic() < factory.until:
                factory.failures += 1
                raise locked()
            real_commit()

        uow.commit = commit  # type: ignore[method-assign]
        return uow


def test_a_database_locked_for_seconds_loses_no_row(platform: Platform, alice):
    """Three tries in 0.6 s used to drop every queued row; an outage now only delays them."""
    factory = LockedFor(platform, seconds=1.5)
    writer = BackgroundWriter(factory, backoff=0.05, backoff_cap=0.2)
    for i in range(30):
        writer.submit(alice.id, usage(alice.id, f"locked{i}"))
    writer.flush()
    assert factory.failures > 5
    assert keys(platform) == {f"locked{i}" for i in range(30)}
    assert writer.dropped == 0
    writer.close()


def test_a_permanent_error_drops_its_row_at_once(platform: Platform, alice):
    writer = BackgroundWriter(platform.uow_factory, backoff=5.0)  # a retry would take 5 s
    gate = threading.Event()
    writer.submit(alice.id, lambda uow: gate.wait(5))

    def duplicate(uow: Any) -> None:
        raise sa.exc.IntegrityError("INSERT", {}, Exception("UNIQUE constraint failed"))

    writer.submit(alice.id, duplicate)
    writer.submit(alice.id, usage(alice.id, "neighbour"))
    started = time.monotonic()
    gate.set()
    writer.flush()
    assert time.monotonic() - started < 2.0
    assert keys(platform) == {"neighbour"} and writer.dropped == 1
    writer.close()


def test_an_outage_past_the_deadline_drops_and_logs(
    platform: Platform, alice, caplog: pytest.LogCaptureFixture
):
    writer = BackgroundWriter(LockedFor(platform, 60), backoff=0.01, deadline=0.2)
    with caplog.at_level(logging.ERROR, logger="hartonomous.store.background"):
        writer.submit(alice.id, usage(alice.id, "lost-to-a-long-outage"))
        writer.flush()
    assert writer.dropped == 1
    assert any("lost-to-a-long-outage" in r.getMessage() for r in caplog.records)
    writer.close(timeout=1)


def test_a_failing_write_in_the_caller_never_reaches_the_request(platform: Platform, alice):
    """Queue full, the caller's own write hits a locked database: submit returns, and the row
    is written later by the thread."""
    gate = threading.Event()
    caller_failures = []

    def factory(*, write: bool, tenant_id: str | None = None) -> Any:
        if threading.current_thread().name == "stuck-writes":
            gate.wait(10)
            return platform.uow_factory(write=write, tenant_id=tenant_id)
        uow = platform.uow_factory(write=write, tenant_id=tenant_id)

        def commit() -> None:
            caller_failures.append(1)
            raise locked()

        uow.commit = commit  # type: ignore[method-assign]
        return uow

    writer = BackgroundWriter(factory, "stuck-writes", maxsize=2, submit_timeout=0.2)
    writer.submit(alice.id, usage(alice.id, "taken"))
    time.sleep(0.1)
    writer.submit(alice.id, usage(alice.id, "q1"))
    writer.submit(alice.id, usage(alice.id, "q2"))
    threading.Timer(0.3, gate.set).start()  # room comes back while the caller requeues
    writer.submit(alice.id, usage(alice.id, "from-the-caller"))  # must not raise
    assert caller_failures
    writer.flush()
    assert keys(platform) == {"taken", "q1", "q2", "from-the-caller"}
    assert writer.dropped == 0
    writer.close()


def test_submits_racing_close_are_written_or_refused(platform: Platform, alice):
    writer = BackgroundWriter(platform.uow_factory)
    accepted: list[str] = []
    lock = threading.Lock()

    def submitter(n: int) -> None:
        for i in range(200):
            key = f"race{n}-{i}"
            try:
                writer.submit(alice.id, usage(alice.id, key))
            except RuntimeError:
                return
            with lock:
                accepted.append(key)

    threads = [threading.Thread(target=submitter, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    time.sleep(0.02)
    writer.close()
    for t in threads:
        t.join()
    assert keys(platform) == set(accepted)


def test_close_on_a_full_queue_does_not_block_forever(platform: Platform, alice):
    gate = threading.Event()
    writer = BackgroundWriter(platform.uow_factory, maxsize=1, submit_timeout=0.1)
    writer.submit(alice.id, lambda uow: gate.wait(10))
    time.sleep(0.1)
    writer.submit(alice.id, usage(alice.id, "waiting"))  # the queue is full now
    started = time.monotonic()
    writer.close(timeout=0.3)
    assert time.monotonic() - started < 2.0
    gate.set()
