"""One contract for the limiters, run against both states: in this process (the embedded
world) and a real redis-server (Azure's, shared by instances). Plans come from the real store."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator

import pytest
from fixtures_redis import _start

from conftest import TenantKeys, make_tenant
from hartonomous.admission.memory import MemoryState
from hartonomous.admission.plans import PlanBook
from hartonomous.admission.redis_state import RedisState
from hartonomous.admission.service import AdmissionService
from hartonomous.admission.types import Plan
from hartonomous.bootstrap import Platform
from hartonomous.errors import InvalidInput, ServiceUnavailable, TooManyRequests
from hartonomous.ports import LimiterState

PLAN = Plan(requests_per_second=10, burst=3, concurrent_generations=2, tokens_per_minute=100)
Make = Callable[..., AdmissionService]


@pytest.fixture(params=["memory", "redis"])
def make(request: pytest.FixtureRequest, platform: Platform) -> Iterator[Make]:
    """``make(plan)``: an Admission over a fresh state of the parameter's kind (two calls,
    two instances; on Redis they share the server, as two Function App instances do)."""
    made: list[AdmissionService] = []

    def build(plan: Plan = PLAN, lease_s: float = 30.0) -> AdmissionService:
        state: LimiterState
        if request.param == "redis":
            state = RedisState(request.getfixturevalue("redis_url"), lease_s=lease_s)
        else:
            state = MemoryState()
        made.append(AdmissionService(PlanBook(platform.uow_factory, plan), state))
        return made[-1]

    yield build
    for admission in made:
        admission.close()


def refused(call: Callable[[], object]) -> TooManyRequests:
    with pytest.raises(TooManyRequests) as caught:
        call()
    return caught.value


def test_a_burst_is_admitted_then_refused_until_the_bucket_refills(
    make: Make, alice: TenantKeys
) -> None:
    admission = make()
    said = [admission.admit_request(alice.id)["RateLimit"] for _ in range(3)]
    assert said == ['"requests";r=2;t=1', '"requests";r=1;t=1', '"requests";r=0;t=1']
    error = refused(lambda: admission.admit_request(alice.id))
    assert error.status == 429 and error.extensions["limit"] == "requests_per_second"
    assert error.headers["Retry-After"] == "1"  # 0.1 s, rounded up to whole seconds
    assert error.headers["RateLimit-Policy"] == '"requests";q=3;w=1'
    assert error.headers["RateLimit"].startswith('"requests";r=0;')
    time.sleep(0.12)  # one request's worth of refill at 10 a second
    assert admission.admit_request(alice.id)["RateLimit"].startswith('"requests";r=0;')
    refused(lambda: admission.admit_request(alice.id))


def test_retry_after_is_the_wait_for_the_next_token(make: Make, alice: TenantKeys) -> None:
    admission = make(Plan(0.25, 1, 1, 100))
    assert admission.admit_request(alice.id)["RateLimit-Policy"] == '"requests";q=1;w=4'
    assert refused(lambda: admission.admit_request(alice.id)).headers["Retry-After"] == "4"


def test_one_tenants_exhaustion_leaves_another_admitted(
    make: Make, platform: Platform, alice: TenantKeys
) -> None:
    bob = make_tenant(platform, "bob")
    admission = make()
    for _ in range(3):
        admission.admit_request(alice.id)
    refused(lambda: admission.admit_request(alice.id))
    assert admission.admit_request(bob.id)["RateLimit"].startswith('"requests";r=2;')


def test_concurrent_generations_are_held_while_the_permit_is(make: Make, alice: TenantKeys) -> None:
    admission = make()
    with admission.generation(alice.id), admission.generation(alice.id):
        error = refused(lambda: admission.generation(alice.id).__enter__())
        assert error.extensions["limit"] == "concurrent_generations"
        assert error.headers["Retry-After"] == "1"
        assert error.headers["RateLimit-Policy"].startswith('"generations";q=2;')
    with admission.generation(alice.id), admission.generation(alice.id):
        pass  # both released at exit: two again


def test_a_failed_generation_releases_its_permit(make: Make, alice: TenantKeys) -> None:
    admission = make(Plan(10, 3, 1, 100))
    with pytest.raises(RuntimeError), admission.generation(alice.id):
        raise RuntimeError("the model failed")
    with admission.generation(alice.id):
        pass


def test_tokens_per_minute_refuse_the_next_generation(make: Make, alice: TenantKeys) -> None:
    admission = make()
    with admission.generation(alice.id) as permit:
        permit.charge(60)
    with admission.generation(alice.id) as permit:  # 60 of 100: still room
        for _ in range(50):
            permit.charge(1)  # 110: past the limit as it ran, the window is full
    error = refused(lambda: admission.generation(alice.id).__enter__())
    assert error.extensions["limit"] == "tokens_per_minute"
    assert 1 <= int(error.headers["Retry-After"]) <= 120
    assert error.headers["RateLimit-Policy"] == '"tokens";q=100;w=60;qu="tokens"'


def test_a_plan_set_holds_at_once_and_is_bounded(make: Make, alice: TenantKeys) -> None:
    admission = make()
    assert admission.tenant_plan(alice.id).defaults == frozenset(
        {"requests_per_second", "burst", "concurrent_generations", "tokens_per_minute"}
    )
    admission.plans.set(alice.id, {"burst": 1})
    admission.admit_request(alice.id)
    refused(lambda: admission.admit_request(alice.id))
    found = admission.tenant_plan(alice.id)
    assert found.plan == Plan(10, 1, 2, 100) and "burst" not in found.defaults
    with pytest.raises(InvalidInput, match=r"burst must be >= 1 and <= 1000000 \(got 0\)"):
        admission.plans.set(alice.id, {"burst": 0})
    with pytest.raises(InvalidInput, match="requests_per_second must be > 0"):
        admission.plans.set(alice.id, {"requests_per_second": -1})


# -- Redis only: instances share the state ----------------------------------------------------


@pytest.fixture
def two(redis_url: str, platform: Platform) -> Iterator[tuple[AdmissionService, ...]]:
    pair = tuple(
        AdmissionService(PlanBook(platform.uow_factory, PLAN), RedisState(redis_url))
        for _ in range(2)
    )
    yield pair
    for admission in pair:
        admission.close()


def test_instances_sharing_redis_share_the_bucket_and_the_generations(
    two: tuple[AdmissionService, AdmissionService], alice: TenantKeys
) -> None:
    one, other = two
    one.admit_request(alice.id)
    other.admit_request(alice.id)
    one.admit_request(alice.id)
    refused(lambda: other.admit_request(alice.id))
    with one.generation(alice.id), other.generation(alice.id):
        refused(lambda: one.generation(alice.id).__enter__())
        refused(lambda: other.generation(alice.id).__enter__())
    with other.generation(alice.id):
        pass


HOLDER = """
import sys, time
from hartonomous.admission.redis_state import RedisState
state = RedisState(sys.argv[1], lease_s=1.0)
assert state.acquire(sys.argv[2], 1) is not None
print("held", flush=True)
time.sleep(60)
"""


def test_a_crashed_instances_generation_lapses_a_live_ones_does_not(
    redis_url: str, platform: Platform, alice: TenantKeys
) -> None:
    plan = Plan(10, 3, 1, 100)
    admission = AdmissionService(
        PlanBook(platform.uow_factory, plan), RedisState(redis_url, lease_s=1.0)
    )
    try:
        with admission.generation(alice.id):  # held past its lease: refreshed while held
            time.sleep(1.6)
            refused(lambda: admission.generation(alice.id).__enter__())
        crashed = subprocess.Popen(
            [sys.executable, "-c", textwrap.dedent(HOLDER), redis_url, alice.id],
            stdout=subprocess.PIPE,
            env={**os.environ},
        )
        assert crashed.stdout is not None and crashed.stdout.readline() == b"held\n"
        os.kill(crashed.pid, signal.SIGKILL)
        crashed.wait()
        refused(lambda: admission.generation(alice.id).__enter__())
        deadline = time.monotonic() + 5
        while True:
            try:
                with admission.generation(alice.id):
                    break
            except TooManyRequests:
                assert time.monotonic() < deadline, "the dead instance's lease never lapsed"
                time.sleep(0.1)
    finally:
        admission.close()


@pytest.mark.parametrize("rate", [7.0, 3.0, 0.3, 60_000.0])
def test_remaining_counts_every_whole_request_left(
    make: Make, alice: TenantKeys, rate: float
) -> None:
    """A full bucket after one take holds ``burst - 1``, whatever the rate's microseconds
    (on Redis, 7 a second said burst - 2: float time at epoch scale)."""
    admission = make(Plan(rate, 10, 1, 100))
    said = admission.admit_request(alice.id)["RateLimit"]
    assert said.startswith('"requests";r=9;'), said


def test_redis_gone_is_a_503_and_never_fails_a_finished_generation(
    tmp_path, platform: Platform, alice: TenantKeys
) -> None:
    """A decision Redis cannot answer is a 503 with Retry-After (it was an unexplained
    500); a generation that ran while it went away still ends well (it was a 500 after its
    answer was written)."""
    proc, port = _start(tmp_path)
    admission = AdmissionService(
        PlanBook(platform.uow_factory, PLAN), RedisState(f"redis://127.0.0.1:{port}/0")
    )
    try:
        with admission.generation(alice.id) as permit:
            permit.charge(5)
            proc.kill()
            proc.wait()
            permit.charge(5)  # counted nowhere, and no error
        for decide in (
            lambda: admission.admit_request(alice.id),
            lambda: admission.generation(alice.id).__enter__(),
        ):
            with pytest.raises(ServiceUnavailable) as caught:
                decide()
            assert caught.value.headers["Retry-After"] == "1"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        admission.close()
