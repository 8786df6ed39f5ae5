"""Payments against a real Stripe-protocol server (localstripe): top-ups granted by Stripe's
signed webhook, replays and forgeries, the postpaid billing run through the local Durable
host, a run killed mid-way, Stripe unreachable, and reconciliation (docs/billing.md)."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
import stripe
from fastapi.testclient import TestClient
from fixtures_localstripe import API_KEY, register_webhook
from live_server import serving

from conftest import TenantKeys, make_tenant
from functions import indexed_app, runtime
from hartonomous.api.app import create_app
from hartonomous.billing.billing_store import Invoice
from hartonomous.billing.money import MICROS, to_cents, to_micros
from hartonomous.billing.payments_service import Period
from hartonomous.billing.stripe_payments import LocalstripePayments
from hartonomous.billing.workflow import BILLING_RUN
from hartonomous.bootstrap import Platform, bootstrap
from hartonomous.metering.ledger import Usage
from hartonomous.services.clock import new_id, utcnow
from hartonomous.settings import Settings
from hartonomous.store.schema import stripe_events, workflow_failures

SECRET = "whsec_hartonomous_test"
TESTS = Path(__file__).parent
PROBLEM = "application/problem+json"


def until(check: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if found := check():
            return found
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def settings_for(data: Path, stripe_base: str, **more: Any) -> Settings:
    return Settings(
        data_dir=data, stripe_api_key=API_KEY, stripe_webhook_secret=SECRET,
        stripe_api_base=stripe_base, stripe_flavor="localstripe", billing_retry_first_ms=20,
        **more,
    )  # fmt: skip


@pytest.fixture
def billing(tmp_path: Path, localstripe: str) -> Iterator[Platform]:
    """The platform as `hartonomous serve` builds it, paying through localstripe."""
    p = bootstrap(
        settings_for(tmp_path / "data", localstripe), functions=indexed_app().get_functions()
    )
    runtime.use(p)
    p.start_background()
    yield p
    runtime.use(None)
    p.close()


def stripe_client(base: str) -> stripe.StripeClient:
    return LocalstripePayments(API_KEY, None, api_base=base).client


def signed(payload: bytes, secret: str = SECRET, at: int | None = None) -> str:
    """A Stripe-Signature header, by Stripe's documented scheme (HMAC-SHA256 of t.payload)."""
    t = int(time.time()) if at is None else at
    mac = hmac.new(secret.encode(), f"{t}.".encode() + payload, hashlib.sha256).hexdigest()
    return f"t={t},v1={mac}"


def event(type_: str, obj: dict[str, Any], event_id: str | None = None) -> bytes:
    body = {"id": event_id or f"evt_{new_id()}", "object": "event", "type": type_,
            "api_version": "2017-08-15", "created": int(time.time()), "livemode": False,
            "data": {"object": obj}}  # fmt: skip
    return json.dumps(body).encode()


def run_billing(p: Platform, period: Period, instance_id: str) -> dict[str, Any]:
    assert p.workflows is not None
    client = p.workflows.client

    async def go() -> dict[str, Any]:
        await client.start_new(
            BILLING_RUN, instance_id, {"period": period.to_json(), "retry_first_ms": 20}
        )
        while True:
            status = await client.get_status(instance_id)
            if status.runtime_status is not None and status.runtime_status.value in (
                "Completed", "Failed", "Terminated",
            ):  # fmt: skip
                assert status.runtime_status.value == "Completed", status.output
                return dict(status.output)
            await asyncio.sleep(0.1)

    return asyncio.run(go())


def card_on_file(p: Platform, base: str, tenant_id: str) -> str:
    """What the customer does once (Checkout or a SetupIntent in real life): a card that
    invoices charge."""
    customer = p.payments.customer(tenant_id)
    client = stripe_client(base)
    pm = client.v1.payment_methods.create(
        params={
            "type": "card",
            "card": {"number": "4242424242424242", "exp_month": 12, "exp_year": 2030,
                     "cvc": "123"},
        }
    )  # fmt: skip
    client.v1.payment_methods.attach(pm.id, params={"customer": customer})
    client.v1.customers.update(
        customer, params={"invoice_settings": {"default_payment_method": pm.id}}
    )
    return customer


def postpaid_with_usage(
    p: Platform, name: str, credits_used: float, at: datetime | None = None
) -> TenantKeys:
    """A postpaid tenant with no grant left: everything it uses (at ``at``) is owed."""
    tenant = make_tenant(p, name)
    p.credits.set_mode(tenant.id, postpaid=True, credit_limit=10_000)
    with p.uow_factory(write=True, tenant_id=tenant.id) as uow:
        grant = uow.credits.grants(tenant.id)[0]
        uow.credits.settle(tenant.id, "burn-the-starting-grant", grant.remaining, {}, utcnow())
        tokens = round(credits_used * 1000 / 0.4)  # completion tokens cost 0.4 credits / 1K
        uow.usage.record(
            tenant.id, f"receipt:{new_id()}",
            [Usage("generation.completion_tokens", tokens, "tokens")], at or utcnow(),
        )  # fmt: skip
        uow.commit()
    return tenant


def this_hour() -> Period:
    """A period that has just ended: it holds everything recorded so far."""
    now = utcnow()
    return Period(f"test-{new_id()[:8]}", now - timedelta(hours=1), now)


def ours(base: str, customer: str, invoice: Invoice) -> list[Any]:
    found = stripe_client(base).v1.invoices.list(params={"customer": customer, "limit": 100})
    return [
        i for i in found.data
        if (i.metadata.to_dict() if i.metadata else {}).get("hartonomous_invoice_id") == invoice.id
    ]  # fmt: skip


# -- top-ups and webhooks ---------------------------------------------------------------------


def test_a_top_up_is_granted_by_stripes_signed_webhook_once(
    billing: Platform, localstripe: str
) -> None:
    p = billing
    alice = make_tenant(p, "alice")
    start = p.settings.billing_starting_credits
    with serving(create_app(p), lifespan="on") as base, httpx.Client(base_url=base) as api:
        register_webhook(localstripe, f"hartonomous-{new_id()[:8]}", f"{base}/v1/webhooks/stripe",
                         SECRET)  # fmt: skip
        made = api.post(
            "/v1/billing/top-ups", json={"amount": 500},
            headers={**alice.auth("admin"), "Idempotency-Key": "order-1"},
        )  # fmt: skip
        assert made.status_code == 201, made.text
        top_up = made.json()
        assert top_up["client_secret"].startswith(top_up["payment_intent_id"])
        assert (top_up["credits"], top_up["amount_cents"], top_up["currency"]) == (500, 500, "usd")

        def available() -> float:
            got = api.get("/v1/billing/balance", headers=alice.auth("read"))
            return float(got.json()["available"])

        assert available() == start  # nothing until Stripe says it was paid
        # The page's Stripe.js confirms the payment with the card the customer typed.
        client = stripe_client(localstripe)
        client.v1.payment_intents.update(
            top_up["payment_intent_id"], params={"payment_method": "pm_card_visa"}
        )
        assert client.v1.payment_intents.confirm(top_up["payment_intent_id"]).status == "succeeded"
        until(lambda: available() == start + 500, 20, "the webhook's grant")
        ledger = api.get("/v1/billing/ledger", headers=alice.auth("read")).json()["items"]
        grant = ledger[0]
        assert (grant["kind"], grant["credits"], grant["detail"]["source"]) == (
            "grant", 500, "payment"
        )  # fmt: skip
        assert grant["detail"]["payment_intent"] == top_up["payment_intent_id"]
        with p.engines.read.connect() as conn:
            seen = conn.execute(
                sa.select(stripe_events.c.id, stripe_events.c.outcome).where(
                    stripe_events.c.type == "payment_intent.succeeded",
                    stripe_events.c.tenant_id == alice.id,
                )
            ).one()
        assert seen.outcome == "done"

        # Stripe delivers again (it retries for 3 days): acknowledged, nothing changes.
        intent = client.v1.payment_intents.retrieve(top_up["payment_intent_id"]).to_dict()
        replay = event("payment_intent.succeeded", intent, seen.id)
        again = api.post("/v1/webhooks/stripe", content=replay,
                         headers={"Stripe-Signature": signed(replay)})  # fmt: skip
        assert again.status_code == 200 and again.json()["duplicate"] is True
        # Even a new event id for the same payment grants nothing twice.
        other = event("payment_intent.succeeded", intent)
        sent = api.post("/v1/webhooks/stripe", content=other,
                        headers={"Stripe-Signature": signed(other)})  # fmt: skip
        assert sent.status_code == 200 and sent.json()["queued"] is True
        time.sleep(1.0)
        assert available() == start + 500
        paid = [e for e in api.get("/v1/billing/ledger", headers=alice.auth("read")).json()["items"]
                if e["kind"] == "grant" and e["detail"]["source"] == "payment"]  # fmt: skip
        assert len(paid) == 1


def test_forged_stale_and_unknown_webhooks_change_nothing(billing: Platform) -> None:
    p = billing
    alice = make_tenant(p, "alice")
    intent = {"id": f"pi_{new_id()}", "object": "payment_intent", "amount": 100_000,
              "amount_received": 100_000, "currency": "usd", "status": "succeeded",
              "metadata": {"tenant_id": alice.id, "credits": "100000",
                           "kind": "top-up"}}  # fmt: skip
    payload = event("payment_intent.succeeded", intent)

    def count() -> int:
        with p.engines.read.connect() as conn:
            query = sa.select(sa.func.count()).select_from(stripe_events)
            return int(conn.execute(query).scalar_one())

    with serving(create_app(p), lifespan="on") as base, httpx.Client(base_url=base) as api:
        cases = {
            "forged": signed(payload, secret="whsec_someone_else"),
            "stale": signed(payload, at=int(time.time()) - 301),
            "garbled": "t=1,v1=00",
        }
        for name, signature in cases.items():
            got = api.post("/v1/webhooks/stripe", content=payload,
                           headers={"Stripe-Signature": signature})  # fmt: skip
            assert got.status_code == 400, name
            assert got.headers["content-type"] == PROBLEM and "Stripe-Signature" in got.text
        missing = api.post("/v1/webhooks/stripe", content=payload)
        assert missing.status_code == 422 and missing.headers["content-type"] == PROBLEM
        tampered = payload.replace(b"100000", b"900000")
        got = api.post("/v1/webhooks/stripe", content=tampered,
                       headers={"Stripe-Signature": signed(payload)})  # fmt: skip
        assert got.status_code == 400  # signed over other bytes
        assert count() == 0
        unknown = event("customer.created", {"id": "cus_x", "metadata": {"tenant_id": alice.id}})
        got = api.post("/v1/webhooks/stripe", content=unknown,
                       headers={"Stripe-Signature": signed(unknown)})  # fmt: skip
        assert got.status_code == 200 and got.json() == {
            "received": True, "duplicate": False, "queued": False
        }  # fmt: skip
        assert count() == 1
        # Signed and of a handled type, but not one of our top-ups (an invoice's payment,
        # another app's): recorded, no credits.
        foreign = event("payment_intent.succeeded", {**intent, "metadata": {"tenant_id": alice.id}})
        got = api.post("/v1/webhooks/stripe", content=foreign,
                       headers={"Stripe-Signature": signed(foreign)})  # fmt: skip
        assert got.status_code == 200 and got.json()["queued"] is True

        def outcome() -> str | None:
            with p.engines.read.connect() as conn:
                query = sa.select(stripe_events.c.outcome).where(
                    stripe_events.c.id == json.loads(foreign)["id"]
                )
                found = conn.execute(query).scalar_one()
            return None if found == "queued" else str(found)

        assert until(outcome, 20, "the event's workflow") == "not a top-up"
        # A top-up of ours in form, but its customer is not the tenant's it names.
        foreign = event("payment_intent.succeeded", {**intent, "customer": "cus_someone_else"})
        got = api.post("/v1/webhooks/stripe", content=foreign,
                       headers={"Stripe-Signature": signed(foreign)})  # fmt: skip
        assert got.status_code == 200 and got.json()["queued"] is True
        assert until(outcome, 20, "the event's workflow") == "not this tenant's customer"
        balance = api.get("/v1/billing/balance", headers=alice.auth("read")).json()
        assert balance["available"] == p.settings.billing_starting_credits


# -- postpaid billing -------------------------------------------------------------------------


def test_the_billing_run_invoices_postpaid_usage_once_and_reconciles_it(
    billing: Platform, localstripe: str
) -> None:
    p = billing
    alice = postpaid_with_usage(p, "alice", 1234)
    bob = postpaid_with_usage(p, "bob", 0.4)  # under half a cent: carried, not invoiced
    carol = make_tenant(p, "carol")  # prepaid: never invoiced
    customer = card_on_file(p, localstripe, alice.id)
    assert p.credits.balance(alice.id).owed == 1234 * MICROS
    period = this_hour()
    api = TestClient(create_app(p))  # no lifespan: the fixture runs the background
    summary = run_billing(p, period, f"billing-{period.label}")
    assert summary["tenants"] == 2 and summary["billed"] == 1 and summary["failed"] == []
    assert summary["cents"] == 1234 and summary["differences"] == []
    (invoice,) = p.payments.invoices(alice.id)
    assert (invoice.status, invoice.amount_cents, invoice.stripe_total_cents) == (
        "paid", 1234, 1234
    )  # fmt: skip
    (held,) = ours(localstripe, customer, invoice)
    assert (held.status, held.total, held.amount_paid) == ("paid", 1234, 1234)
    shown = api.get("/v1/billing/invoices", headers=alice.auth("read")).json()
    assert [(i["status"], i["ledger_cents"], i["stripe_cents"], i["difference_cents"])
            for i in shown] == [("paid", 1234, 1234, 0)]  # fmt: skip
    assert api.get("/v1/billing/invoices", headers=carol.auth("read")).json() == []
    assert p.credits.balance(alice.id).owed == 0  # paid
    assert p.credits.balance(bob.id).owed == to_micros(0.4)  # carried

    again = run_billing(p, period, f"billing-{period.label}-again")  # a replayed run
    assert again["billed"] == 1 and again["cents"] == 1234
    assert len(ours(localstripe, customer, invoice)) == 1  # never billed twice
    assert p.payments.invoices(alice.id)[0].difference_cents == 0


@pytest.mark.parametrize("step", ["add_item", "create_invoice"])
def test_a_billing_run_killed_after_stripe_answered_resumes_without_billing_twice(
    tmp_path: Path, localstripe: str, step: str
) -> None:
    data = tmp_path / "data"
    p = bootstrap(settings_for(data, localstripe))
    try:
        alice = postpaid_with_usage(p, "alice", 750)
        customer = card_on_file(p, localstripe, alice.id)
    finally:
        p.close()
    period = this_hour()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), *sys.path])}
    victim = subprocess.run(
        [sys.executable, str(TESTS / "billing_kill.py"), str(data), localstripe, API_KEY,
         alice.id, json.dumps(period.to_json()), step],
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert victim.returncode == -9, victim.stdout + victim.stderr
    p = bootstrap(settings_for(data, localstripe))
    try:
        (invoice,) = p.payments.invoices(alice.id)
        # Stripe made the step's object, the row never heard of it.
        if step == "add_item":
            assert invoice.stripe_invoice_item_id is None
        else:
            assert invoice.stripe_invoice_item_id and invoice.stripe_invoice_id is None
        assert invoice.status in ("draft", "open") and invoice.amount_cents == 750
        done = p.payments.bill(alice.id, period)
        assert done["status"] == "paid" and done["amount_cents"] == 750
        assert p.payments.bill(alice.id, period)["status"] == "paid"  # a replay: nothing new
        (invoice,) = p.payments.invoices(alice.id)
        (held,) = ours(localstripe, customer, invoice)
        assert (held.status, held.amount_paid) == ("paid", 750)
        items = stripe_client(localstripe).v1.invoice_items.list(params={"customer": customer})
        assert [i.id for i in items.data] == []  # none left pending: one item, on the invoice
        report = p.payments.reconcile(alice.id, period)
        assert (report["ledger_cents"], report["stripe_cents"], report["difference_cents"]) == (
            750, 750, 0
        )  # fmt: skip
        assert p.credits.balance(alice.id).owed == 0
    finally:
        p.close()


def test_stripe_unreachable_dead_letters_the_tenant_and_a_later_run_bills_it_once(
    tmp_path: Path, localstripe: str
) -> None:
    data = tmp_path / "data"
    closed = "http://127.0.0.1:9"  # discard port: nothing listens
    p = bootstrap(settings_for(data, localstripe), functions=indexed_app().get_functions())
    try:
        alice = postpaid_with_usage(p, "alice", 321)
        card_on_file(p, localstripe, alice.id)
    finally:
        p.close()
    period = this_hour()
    down = bootstrap(settings_for(data, closed), functions=indexed_app().get_functions())
    runtime.use(down)
    try:
        down.start_background()
        summary = run_billing(down, period, f"billing-{period.label}")
        assert summary["failed"] == [alice.id] and summary["billed"] == 0
        with down.engines.read.connect() as conn:
            failure = conn.execute(
                sa.select(workflow_failures.c.name, workflow_failures.c.error).where(
                    workflow_failures.c.tenant_id == alice.id
                )
            ).one()
        assert failure.name == "billing_bill_tenant" and "Stripe" in failure.error
        (invoice,) = down.payments.invoices(alice.id)
        assert invoice.status == "draft" and invoice.stripe_invoice_item_id is None
        assert down.credits.balance(alice.id).owed == 321 * MICROS  # nothing paid
    finally:
        runtime.use(None)
        down.close()
    up = bootstrap(settings_for(data, localstripe), functions=indexed_app().get_functions())
    runtime.use(up)
    try:
        up.start_background()
        # The next period's run finishes the stuck invoice first (nothing new to bill).
        summary = run_billing(up, this_hour(), f"billing-{new_id()}")
        assert summary["failed"] == [] and summary["billed"] == 0
        (invoice,) = up.payments.invoices(alice.id)
        assert invoice.period == period.label and invoice.status == "paid"
        assert invoice.amount_cents == to_cents(321 * MICROS, 1) == invoice.stripe_total_cents
        assert up.credits.balance(alice.id).owed == 0
        again = run_billing(up, period, f"billing-{period.label}-retry")  # the dead letter's
        assert again["billed"] == 1 and again["cents"] == invoice.amount_cents  # nothing new
    finally:
        runtime.use(None)
        up.close()


def test_the_monthly_timer_starts_one_run_per_period(billing: Platform) -> None:
    p = billing
    assert p.workflows is not None
    (timer,) = [t for t in p.workflows.timers.timers if t.name == "billing_monthly"]
    assert timer.client_name == "client"
    p.start_background()
    timer.run(client=p.workflows.client)
    timer.run(client=p.workflows.client)  # fired twice (or late): the same instance
    label = Period.month_before(utcnow()).label

    async def status() -> Any:
        assert p.workflows is not None
        return await p.workflows.client.get_status(f"billing-{label}")

    done = until(
        lambda: (s := asyncio.run(status())).runtime_status is not None
        and s.runtime_status.value == "Completed" and s,
        30, "the monthly run",
    )  # fmt: skip
    assert done.output["period"] == label and done.output["tenants"] == 0


def test_the_operator_bills_last_month_by_hand(tmp_path: Path, localstripe: str) -> None:
    from typer.testing import CliRunner

    from hartonomous.cli.main import app as cli

    data = tmp_path / "data"
    last_month = Period.month_before(utcnow())
    p = bootstrap(settings_for(data, localstripe))
    try:
        alice = postpaid_with_usage(p, "alice", 250, at=last_month.end - timedelta(hours=1))
        customer = card_on_file(p, localstripe, alice.id)
        with p.uow_factory(write=True, tenant_id=alice.id) as uow:  # this month's: not yet
            uow.usage.record(
                alice.id,
                "receipt:this-month",
                [Usage("generation.completion_tokens", 1000, "tokens")],
                utcnow(),
            )
            uow.commit()  # fmt: skip
    finally:
        p.close()
    env = {"HARTONOMOUS_STRIPE_API_KEY": API_KEY, "HARTONOMOUS_STRIPE_API_BASE": localstripe,
           "HARTONOMOUS_STRIPE_FLAVOR": "localstripe", "COLUMNS": "200"}  # fmt: skip
    runner = CliRunner(env=env)
    for _ in range(2):  # last month by default; the second run bills nothing new
        done = runner.invoke(cli, ["billing", "run", "--data-dir", str(data)])
        assert done.exit_code == 0, done.output
        assert alice.id in done.output and "paid" in done.output and "250" in done.output
    bad = runner.invoke(cli, ["billing", "run", "--period", "2026-13", "--data-dir", str(data)])
    assert bad.exit_code != 0 and "not a month" in bad.output
    early = runner.invoke(
        cli, ["billing", "run", "--period", f"{utcnow():%Y-%m}", "--data-dir", str(data)]
    )
    assert early.exit_code != 0 and "once it has ended" in str(early.exception)
    p = bootstrap(settings_for(data, localstripe))
    try:
        (invoice,) = p.payments.invoices(alice.id)
        assert invoice.period == last_month.label and invoice.difference_cents == 0
        assert len(ours(localstripe, customer, invoice)) == 1
        assert p.credits.balance(alice.id).owed == to_micros(0.4)  # this month's, owed still
    finally:
        p.close()


def test_a_declined_invoice_paid_later_on_stripe_is_paid_once(
    billing: Platform, localstripe: str
) -> None:
    """The card is declined: the tenant's billing dead-letters with its invoice open at
    Stripe. The customer then pays it on Stripe's page: the webhook marks it paid and the
    account owes nothing, once, however often Stripe tells us; the next run has nothing
    left to finish."""
    p = billing
    alice = postpaid_with_usage(p, "alice", 420)
    customer = p.payments.customer(alice.id)
    client = stripe_client(localstripe)
    declining = client.v1.payment_methods.create(
        params={"type": "card", "card": {"number": "4000000000000341", "exp_month": 12,
                                         "exp_year": 2030, "cvc": "123"}}
    )  # fmt: skip
    client.v1.payment_methods.attach(declining.id, params={"customer": customer})
    client.v1.customers.update(
        customer, params={"invoice_settings": {"default_payment_method": declining.id}}
    )
    period = this_hour()
    summary = run_billing(p, period, f"billing-{period.label}")
    assert summary["failed"] == [alice.id]
    (invoice,) = p.payments.invoices(alice.id)
    assert invoice.status == "open" and invoice.stripe_invoice_id is not None
    assert p.credits.balance(alice.id).owed == 420 * MICROS
    # The customer pays with another card on Stripe's hosted page.
    card_on_file(p, localstripe, alice.id)
    paid = client.v1.invoices.pay(invoice.stripe_invoice_id).to_dict()
    assert paid["status"] == "paid"
    payload = event("invoice.payment_succeeded", paid)
    with serving(create_app(p), lifespan="on") as base, httpx.Client(base_url=base) as api:
        for _ in range(2):  # a new event id each time: Stripe's retries, another endpoint
            payload = event("invoice.payment_succeeded", paid)
            sent = api.post("/v1/webhooks/stripe", content=payload,
                            headers={"Stripe-Signature": signed(payload)})  # fmt: skip
            assert sent.status_code == 200 and sent.json()["queued"] is True

            def settled() -> bool:
                return p.payments.invoices(alice.id)[0].status == "paid"

            until(settled, 20, "the invoice marked paid")
            time.sleep(0.5)
        assert p.credits.balance(alice.id).owed == 0  # once, not twice (never below 0)
        with p.uow_factory(write=False, tenant_id=alice.id) as uow:
            assert uow.billing.unfinished(alice.id) == []
        # (inside the server: its lifespan's end stops the workflow host)
        later = run_billing(p, this_hour(), f"billing-{new_id()}")
        assert later["billed"] == 0 and later["failed"] == []
    assert len(ours(localstripe, customer, p.payments.invoices(alice.id)[0])) == 1
