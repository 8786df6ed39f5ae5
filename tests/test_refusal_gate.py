"""The refusal gate (``api/refusal_gate.py``): a key the request bucket refused is refused on
the event loop until the bucket would admit it again, one request at a time decides after
that, and nothing the bucket would admit is refused for long. First the middleware alone on
a clock of its own, then the real app, store and bucket."""

from __future__ import annotations

import asyncio
import time
from collections.abc import MutableMapping
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from conftest import TenantKeys
from hartonomous.api import refusal_gate
from hartonomous.api.refusal_gate import RefusalGate
from hartonomous.bootstrap import Platform
from hartonomous.errors import TooManyRequests
from hartonomous.services import tenants as tenant_service
from hartonomous.settings import Settings

# -- the middleware alone -----------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Auth:
    """Stands in for the app behind the gate: refuses or admits as told, and can hold a
    request until released (a request being decided)."""

    def __init__(self) -> None:
        self.calls = 0
        self.refuse_for: float | None = 0.5
        self.hold: asyncio.Event | None = None

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        self.calls += 1
        if self.hold is not None:
            await self.hold.wait()
        if self.refuse_for is not None:
            error = TooManyRequests(
                "over the rate",
                headers={"RateLimit": '"requests";r=0;t=1', "Retry-After": "1"},
                retry_after_s=self.refuse_for,
                limit="requests_per_second",
            )
            refusal_gate.refused(scope, error)
            status = 429
        else:
            refusal_gate.admitted(scope)
            status = 200
        await send({"type": "http.response.start", "status": status, "headers": []})
        await send({"type": "http.response.body", "body": b""})


async def call(gate: RefusalGate, key: str = "hk_a", path: str = "/v1/me") -> dict[str, Any]:
    scope = {
        "type": "http",
        "method": "GET",
        "path": path,
        "query_string": b"",
        "headers": [(b"authorization", f"Bearer {key}".encode())],
    }
    sent: list[MutableMapping[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(message)

    await gate(scope, receive, send)
    start = sent[0]
    return {
        "status": start["status"],
        "headers": {k.decode(): v.decode() for k, v in start["headers"]},
        "body": sent[1]["body"],
    }


def test_a_refused_key_is_refused_at_the_gate_until_the_bucket_admits_again() -> None:
    auth, clock = Auth(), Clock()
    gate = RefusalGate(auth, clock=clock)

    async def scenario() -> None:
        assert (await call(gate))["status"] == 429 and auth.calls == 1  # the bucket said no
        clock.now += 0.2
        answer = await call(gate)
        assert answer["status"] == 429 and auth.calls == 1  # the gate said no
        assert answer["headers"]["content-type"] == "application/problem+json"
        assert answer["headers"]["retry-after"] == "1"
        assert answer["headers"]["ratelimit"] == '"requests";r=0;t=1'
        assert b'"limit":"requests_per_second"' in answer["body"]
        assert (await call(gate, "hk_other"))["status"] == 429 and auth.calls == 2  # own key
        clock.now += 0.31  # the bucket admits again: the next request is decided by it
        auth.refuse_for = None
        assert (await call(gate))["status"] == 200 and auth.calls == 3
        assert (await call(gate))["status"] == 200 and auth.calls == 4
        assert gate.remembered == 1  # hk_other only

    asyncio.run(scenario())


def test_one_request_at_a_time_decides_after_the_window() -> None:
    auth, clock = Auth(), Clock()
    gate = RefusalGate(auth, clock=clock)

    async def scenario() -> None:
        await call(gate)
        clock.now += 1
        auth.hold, auth.refuse_for = asyncio.Event(), None
        deciding = asyncio.create_task(call(gate))
        await asyncio.sleep(0)  # it is past the gate, held in auth
        assert auth.calls == 2
        assert (await call(gate))["status"] == 429 and auth.calls == 2
        auth.hold.set()
        assert (await deciding)["status"] == 200
        auth.hold = None
        assert (await call(gate))["status"] == 200 and auth.calls == 3

    asyncio.run(scenario())


def test_a_key_quiet_since_its_window_is_forgotten_and_its_burst_flows() -> None:
    auth, clock = Auth(), Clock()
    gate = RefusalGate(auth, clock=clock)

    async def scenario() -> None:
        await call(gate)
        clock.now += 10  # long after the bucket admitted again
        auth.hold, auth.refuse_for = asyncio.Event(), None
        burst = [asyncio.create_task(call(gate)) for _ in range(3)]
        await asyncio.sleep(0)
        assert auth.calls == 4  # all three reached auth at once: none refused at the gate
        auth.hold.set()
        assert [r["status"] for r in await asyncio.gather(*burst)] == [200, 200, 200]

    asyncio.run(scenario())


def test_a_request_deciding_too_long_lets_the_next_decide() -> None:
    auth, clock = Auth(), Clock()
    gate = RefusalGate(auth, clock=clock)

    async def scenario() -> None:
        await call(gate)
        clock.now += 0.6
        auth.hold, auth.refuse_for = asyncio.Event(), None
        slow = asyncio.create_task(call(gate))  # a slow body, say
        await asyncio.sleep(0)
        assert (await call(gate))["status"] == 429 and auth.calls == 2
        clock.now += 2.1  # deciding for longer than DECIDING_S
        second = asyncio.create_task(call(gate))
        await asyncio.sleep(0)
        assert auth.calls == 3
        auth.hold.set()
        assert (await slow)["status"] == 200 and (await second)["status"] == 200

    asyncio.run(scenario())


def test_only_the_authenticated_routes_are_gated() -> None:
    auth, clock = Auth(), Clock()
    gate = RefusalGate(auth, clock=clock)

    async def scenario() -> None:
        await call(gate)
        auth.refuse_for = None
        assert (await call(gate, path="/healthz"))["status"] == 200 and auth.calls == 2
        assert (await call(gate))["status"] == 429 and auth.calls == 2

    asyncio.run(scenario())


def test_a_request_that_never_reaches_admission_leaves_nothing_behind() -> None:
    clock = Clock()

    async def unauthenticated(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 401, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    auth = Auth()
    gate = RefusalGate(auth, clock=clock)

    async def scenario() -> None:
        await call(gate)
        clock.now += 1
        gate.app = unauthenticated  # the key was revoked meanwhile, say
        assert (await call(gate))["status"] == 401
        assert gate.remembered == 0

    asyncio.run(scenario())


def test_the_gate_remembers_a_bounded_number_of_keys() -> None:
    gate = RefusalGate(Auth(), max_keys=2, clock=Clock())

    async def scenario() -> None:
        for key in ("hk_1", "hk_2", "hk_3"):
            await call(gate, key)

    asyncio.run(scenario())
    assert gate.remembered == 2


# -- the real app -------------------------------------------------------------------------------


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """One request at once, one more every half second."""
    return Settings(data_dir=tmp_path / "data", plan_requests_per_second=2.0, plan_burst=1)


def test_over_the_app_a_flood_is_refused_without_authentication_and_admitted_in_time(
    client: TestClient, platform: Platform, alice: TenantKeys, bob: TenantKeys
) -> None:
    key = alice.auth("read")
    assert client.get("/v1/me", headers=key).status_code == 200
    refused = client.get("/v1/me", headers=key)
    assert refused.status_code == 429 and refused.json()["limit"] == "requests_per_second"
    # Revoked now: inside the refusal window the gate answers without authenticating.
    keys = tenant_service.list_keys(platform.uow_factory, tenant_id=alice.id, limit=10)
    for issued in keys.items:
        tenant_service.revoke_key(
            platform.uow_factory, key_id=issued.id, tenant_id=alice.id, allow_last_admin=True
        )
    again = client.get("/v1/me", headers=key)
    assert again.status_code == 429, again.text
    assert again.headers["content-type"] == "application/problem+json"
    assert again.headers["Retry-After"] == "1" and "RateLimit" in again.headers
    assert client.get("/v1/me", headers=bob.auth("read")).status_code == 200  # B untouched
    time.sleep(0.55)  # the bucket would admit now: so the store decides, and says revoked
    assert client.get("/v1/me", headers=key).status_code == 401


def test_a_tenant_paced_at_its_rate_is_never_refused(client: TestClient, alice: TenantKeys) -> None:
    key = alice.auth("read")
    assert client.get("/v1/me", headers=key).status_code == 200
    assert client.get("/v1/me", headers=key).status_code == 429
    for _ in range(3):
        time.sleep(0.52)
        assert client.get("/v1/me", headers=key).status_code == 200
