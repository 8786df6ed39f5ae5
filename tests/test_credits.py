"""Credits: the starting grant, holds and settlement, refusals, postpaid limits, operator
grants, expiry and the hold sweep, on the real embedded store (docs/billing.md)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from conftest import TenantKeys, make_tenant
from functions import indexed_app, runtime
from hartonomous.api.app import create_app
from hartonomous.billing.money import MICROS, to_micros
from hartonomous.billing.service import CreditService, generation_estimate
from hartonomous.bootstrap import Platform, bootstrap
from hartonomous.cli.main import app as cli
from hartonomous.metering.ledger import Usage
from hartonomous.metering.pricing import price
from hartonomous.services.clock import utcnow
from hartonomous.settings import Settings
from hartonomous.store.schema import credit_entries, credit_holds

PROBLEM = "application/problem+json"


def settle(p: Platform, tenant_id: str, key: str, items: list[Usage]) -> int:
    with p.uow_factory(write=True, tenant_id=tenant_id) as uow:
        added = uow.usage.record(tenant_id, key, items, utcnow())
        uow.commit()
    return added


def entries(p: Platform, tenant_id: str) -> list[tuple[str, int, str]]:
    e = credit_entries
    with p.engines.read.connect() as conn:
        rows = conn.execute(
            sa.select(e.c.kind, e.c.amount, e.c.key).where(e.c.tenant_id == tenant_id)
            .order_by(e.c.id)
        )  # fmt: skip
        return [(str(k), int(a), str(key)) for k, a, key in rows]


@pytest.fixture
def broke(tmp_path: Path) -> Iterator[tuple[Platform, TestClient]]:
    """A deployment whose plan gives no starting credits (with its workflows: an ingestion
    is refused before its workflow would start)."""
    p = bootstrap(
        Settings(data_dir=tmp_path / "data", billing_starting_credits=0),
        functions=indexed_app().get_functions(),
    )
    runtime.use(p)
    with TestClient(create_app(p)) as c:
        yield p, c
    runtime.use(None)
    p.close()


def test_a_new_tenant_has_the_plans_starting_grant(
    client: TestClient, platform: Platform, alice: TenantKeys
) -> None:
    shown = client.get("/v1/billing/balance", headers=alice.auth("read"))
    assert shown.status_code == 200
    body = shown.json()
    assert body["mode"] == "prepaid" and body["payments"] is False
    assert body["available"] == body["granted"] == platform.settings.billing_starting_credits
    assert body["held"] == body["owed"] == 0
    # The account opens on first use, with the grant in the ledger.
    settle(platform, alice.id, "search:1", [Usage("search.queries", 1, "queries")])
    ledger = client.get("/v1/billing/ledger", headers=alice.auth("read")).json()["items"]
    assert [(e["kind"], e["credits"]) for e in ledger] == [
        ("settle", -0.01), ("grant", platform.settings.billing_starting_credits)
    ]  # fmt: skip
    assert ledger[1]["detail"]["source"] == "plan" and ledger[1]["detail"]["kind"] == "promotional"
    after = client.get("/v1/billing/balance", headers=alice.auth("read")).json()
    assert after["available"] == pytest.approx(platform.settings.billing_starting_credits - 0.01)


def test_usage_settles_once_and_burns_promotional_credits_first(
    platform: Platform, alice: TenantKeys
) -> None:
    credits = platform.credits
    paid = credits.grant(alice.id, 5, promotional=False)
    items = [Usage("generation.completion_tokens", 1000, "tokens")]  # 0.4 credits
    assert settle(platform, alice.id, "receipt:a", items) == 1
    assert settle(platform, alice.id, "receipt:a", items) == 0  # a replay: no second debit
    grants = {g.source: g for g in credits.grants(alice.id)}
    assert grants["plan"].remaining == grants["plan"].amount - to_micros(0.4)
    assert grants["operator"].remaining == paid.amount  # paid credits wait their turn
    assert [k for k, _, key in entries(platform, alice.id) if key == "receipt:a"] == ["settle"]


def test_a_prepaid_overdraft_is_paid_from_the_next_grant(
    broke: tuple[Platform, TestClient],
) -> None:
    p, _ = broke
    alice = make_tenant(p, "alice")
    settle(p, alice.id, "receipt:x", [Usage("generation.completion_tokens", 5000, "tokens")])
    assert p.credits.balance(alice.id).available == -to_micros(2)  # an estimate ran short
    p.credits.grant(alice.id, 10, promotional=True)
    balance = p.credits.balance(alice.id)
    assert (balance.owed, balance.granted, balance.available) == (0, 8 * MICROS, 8 * MICROS)


def test_work_the_credits_cannot_cover_is_refused_before_it_starts(
    broke: tuple[Platform, TestClient],
) -> None:
    p, c = broke
    alice = make_tenant(p, "alice")
    generated = c.post("/v1/generate", json={"prompt": "hi", "max_tokens": 8}, headers=alice.auth())
    assert generated.status_code == 402 and generated.headers["content-type"] == PROBLEM
    problem = generated.json()
    estimate = generation_estimate(p.settings.inference_context_tokens - 8, 8, 5) / MICROS
    assert problem["balance"] == 0 and problem["estimate"] == pytest.approx(estimate)
    assert "needs about" in problem["detail"]
    searched = c.post("/v1/search", json={"query": "x"}, headers=alice.auth("read"))
    assert searched.status_code == 402 and searched.json()["estimate"] == 0.01
    ingested = c.post(
        "/v1/ingestions", content=b"# hi", headers={**alice.auth(), "Content-Type": "text/markdown"}
    )
    assert ingested.status_code == 402
    balance = p.credits.balance(alice.id)
    assert balance.held == 0 and balance.open_holds == 0  # nothing held by a refusal
    with p.engines.read.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(credit_holds)).scalar() == 0


def test_a_postpaid_tenant_works_up_to_its_credit_limit(
    broke: tuple[Platform, TestClient],
) -> None:
    p, c = broke
    alice = make_tenant(p, "alice")
    runner = CliRunner(env={"HARTONOMOUS_BILLING_STARTING_CREDITS": "0"})  # the deployment's
    data_dir = ["--data-dir", str(p.settings.data_dir)]
    no_limit = runner.invoke(cli, ["plan", "set", "alice", "--postpaid", *data_dir])
    assert no_limit.exit_code != 0 and "credit limit" in str(no_limit.exception)
    done = runner.invoke(
        cli, ["plan", "set", "alice", "--postpaid", "--credit-limit", "1", *data_dir]
    )
    assert done.exit_code == 0, done.output
    assert "postpaid" in done.output
    assert c.post("/v1/search", json={"query": "x"}, headers=alice.auth("read")).status_code == 200
    p.knowledge.get().search.writes.flush()  # the search's usage, settled on the writer
    assert p.credits.balance(alice.id).available == MICROS - to_micros(0.01)
    with pytest.raises(Exception, match=r"needs about 2 credits; the balance is 0\.99") as refused:
        p.credits.hold(alice.id, "receipt:big", 2 * MICROS, "a generation")
    assert getattr(refused.value, "status", None) == 402
    p.credits.hold(alice.id, "receipt:ok", MICROS // 2, "a generation")
    assert p.credits.balance(alice.id).held == MICROS // 2
    settle(p, alice.id, "receipt:ok", [Usage("generation.completion_tokens", 1000, "tokens")])
    after = p.credits.balance(alice.id)
    assert (after.held, after.owed, after.open_holds) == (0, to_micros(0.41), 0)
    back = runner.invoke(cli, ["plan", "set", "alice", "--prepaid", *data_dir])
    assert back.exit_code == 0 and p.credits.balance(alice.id).credit_limit == 0


def test_credits_come_only_from_the_operator_or_a_payment(
    client: TestClient, platform: Platform, settings: Settings, alice: TenantKeys
) -> None:
    runner = CliRunner()
    data_dir = ["--data-dir", str(settings.data_dir)]
    granted = runner.invoke(
        cli, ["credits", "grant", "alice", "25", "--reason", "support", *data_dir]
    )
    assert granted.exit_code == 0, granted.output
    assert "granted 25 paid credits" in granted.output
    balance = client.get("/v1/billing/balance", headers=alice.auth("read")).json()
    assert balance["available"] == settings.billing_starting_credits + 25
    past = runner.invoke(
        cli, ["credits", "grant", "alice", "5", "--expires", "2020-01-01", *data_dir]
    )
    assert past.exit_code != 0 and "in the past" in str(past.exception)
    for amount in ("-5", "0", "nan", "1e12"):
        refused = runner.invoke(cli, ["credits", "grant", "alice", amount, *data_dir])
        assert refused.exit_code != 0, amount
    # No route grants: an admin key can only ask Stripe for a payment (off here: 501).
    paths = client.get("/openapi.json").json()["paths"]
    assert not [path for path in paths if "grant" in path or "credit" in path]
    assert client.post("/v1/billing/balance", headers=alice.auth("admin")).status_code == 405
    off = client.post("/v1/billing/top-ups", json={"amount": 100}, headers=alice.auth("admin"))
    assert off.status_code == 501 and off.headers["content-type"] == PROBLEM
    for credits in (-5, 0, 10.5, 10**12, 1):  # checked before anything else: 422
        bad = client.post(
            "/v1/billing/top-ups", json={"amount": credits}, headers=alice.auth("admin")
        )
        assert bad.status_code == 422, (credits, bad.text)
    writer = client.post("/v1/billing/top-ups", json={"amount": 100}, headers=alice.auth())
    assert writer.status_code == 403  # buying credits takes an admin key
    assert client.get("/v1/billing/balance", headers=alice.auth("read")).json() == balance


def test_a_hold_never_settled_is_released_by_the_sweep(
    platform: Platform, alice: TenantKeys
) -> None:
    credits = CreditService(platform.uow_factory, hold_ttl=timedelta(minutes=5))
    credits.hold(alice.id, "receipt:lost", MICROS, "a generation")  # its server then died
    credits.hold(alice.id, "receipt:live", MICROS, "a generation")
    assert credits.balance(alice.id).held == 2 * MICROS
    assert credits.sweep(now=utcnow())["released"] == 0  # not expired yet
    settle(platform, alice.id, "receipt:live", [Usage("generation.prompt_tokens", 10, "tokens")])
    assert credits.sweep(now=utcnow() + timedelta(minutes=6))["released"] == 1
    balance = credits.balance(alice.id)
    assert (balance.held, balance.open_holds) == (0, 0)
    assert credits.sweep(now=utcnow() + timedelta(minutes=6))["released"] == 0
    assert credits.release(alice.id, "receipt:lost") is False  # already released


def test_expired_grants_leave_the_balance(platform: Platform, alice: TenantKeys) -> None:
    credits = platform.credits
    soon = utcnow() + timedelta(seconds=2)
    with platform.uow_factory(write=True, tenant_id=alice.id) as uow:
        uow.credits.ensure_account(alice.id, utcnow())
        uow.credits.grant(alice.id, 7 * MICROS, kind="promotional", source="operator",
                          source_ref="operator:soon", at=utcnow(), expires_at=soon)  # fmt: skip
        uow.commit()
    start = platform.settings.billing_starting_credits * MICROS
    assert credits.balance(alice.id).granted == start + 7 * MICROS
    # Expiring credits burn first among equals: the 0.4 comes out of the 7.
    settle(platform, alice.id, "receipt:e", [Usage("generation.completion_tokens", 1000, "tokens")])
    with platform.uow_factory(write=False, tenant_id=alice.id) as uow:
        assert uow.credits.balance(alice.id, soon + timedelta(seconds=1)).granted == start
    assert credits.expire_grants(alice.id, now=soon + timedelta(seconds=1)) == 1
    assert entries(platform, alice.id)[-1] == (
        "expire",
        -to_micros(6.6),
        entries(platform, alice.id)[-1][2],
    )


def test_the_ledger_pages_and_stays_inside_its_tenant(
    client: TestClient, platform: Platform, alice: TenantKeys, bob: TenantKeys
) -> None:
    for i in range(5):
        settle(platform, alice.id, f"search:{i}", [Usage("search.queries", 1, "queries")])
    settle(platform, bob.id, "search:bob", [Usage("search.queries", 1, "queries")])
    seen, cursor = [], None
    while True:
        url = "/v1/billing/ledger?limit=2" + (f"&cursor={cursor}" if cursor else "")
        page = client.get(url, headers=alice.auth("read")).json()
        seen += [e["key"] for e in page["items"]]
        if not (cursor := page["next_cursor"]):
            break
    assert len(seen) == 6 and len(set(seen)) == 6  # five settlements and the grant, once each
    assert "search:bob" not in seen
    bad = client.get("/v1/billing/ledger?cursor=nope", headers=alice.auth("read"))
    assert bad.status_code == 400 and bad.headers["content-type"] == PROBLEM
    assert client.get("/v1/billing/ledger?limit=101", headers=alice.auth("read")).status_code == 422
    cost = price({"search.queries": 1}).credits
    assert client.get("/v1/billing/balance", headers=bob.auth("read")).json()["available"] == (
        pytest.approx(platform.settings.billing_starting_credits - cost)
    )


def test_a_generation_holds_its_estimate_and_settles_in_its_receipts_transaction(
    pipeline_platform: Platform, monkeypatch: pytest.MonkeyPatch
) -> None:
    from hartonomous.events import outbox as outbox_module

    p = pipeline_platform
    alice = make_tenant(p, "alice")
    h = credit_holds
    with TestClient(create_app(p)) as c:
        done = c.post(
            "/v1/generate",
            json={"prompt": "Say hi.", "max_tokens": 4, "k": 0},
            headers=alice.auth(),
        )
        assert done.status_code == 200, done.text
        receipt = done.json()["receipt"]
        key = f"receipt:{receipt['id']}"
        settled = [(kind, amount) for kind, amount, k in entries(p, alice.id) if k == key]
        assert settled == [("settle", -to_micros(receipt["cost"]["credits"]))]
        with p.engines.read.connect() as conn:
            status = conn.execute(sa.select(h.c.status).where(h.c.key == key)).scalar_one()
        assert status == "settled"
        balance = p.credits.balance(alice.id)
        assert (balance.held, balance.open_holds) == (0, 0)
        start = p.settings.billing_starting_credits * MICROS
        assert balance.available == start - to_micros(receipt["cost"]["credits"])

        def broken(*args: object, **kwargs: object) -> None:
            raise RuntimeError("the outbox is down")

        monkeypatch.setattr(outbox_module.OutboxRepository, "add", broken)
        with pytest.raises(RuntimeError, match="outbox is down"):
            c.post("/v1/generate", json={"prompt": "Again.", "max_tokens": 4, "k": 0},
                   headers=alice.auth())  # fmt: skip
    # No receipt, so no debit; its hold was released, not left to the sweep.
    assert [kind for kind, _, k in entries(p, alice.id) if k.startswith("receipt:")] == ["settle"]
    with p.engines.read.connect() as conn:
        statuses = sorted(
            conn.execute(sa.select(h.c.status).where(h.c.tenant_id == alice.id)).scalars()
        )
    assert statuses == ["released", "settled"]
    assert p.credits.balance(alice.id) == balance
