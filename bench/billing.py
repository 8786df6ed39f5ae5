"""Credits and billing, on the embedded platform (SQLite) and a real localstripe:

1. Balance checks and hold/settle latency in process, at ``--tenants`` tenants (1,000) with
   ``--rows`` ledger entries each (1,000): ``balance`` (a read), ``require`` (a search's
   check: its one-second trust), a hold (a write transaction), a settlement (usage recorded,
   priced and debited in one write transaction). Goal: p99 <= 10 ms.
2. The debit's cost per generation: a receipt written (``GenerationService.record``: atoms,
   receipt, edges, usage, outbox) with its settlement, and the same with the settlement
   switched off, alternating. Goal: the receipt's p95 stays under 5 ms.
3. A billing run over ``--billed`` postpaid tenants (1,000) against localstripe, through the
   ``billing_run`` orchestration on the local Durable host: wall time, Stripe calls, and
   the invoices checked to the cent afterwards.

    python bench/billing.py [--tenants 1000] [--rows 1000] [--samples 2000] [--billed 1000]
        [--only checks|receipts|run] [--direct]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from functools import partial
from pathlib import Path
from typing import Any

import sqlalchemy as sa

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from functions import indexed_app, runtime  # noqa: E402
from hartonomous.billing.credits import CreditRepository  # noqa: E402
from hartonomous.billing.money import MICROS, to_cents  # noqa: E402
from hartonomous.billing.payments_service import Period  # noqa: E402
from hartonomous.billing.service import generation_estimate  # noqa: E402
from hartonomous.billing.stripe_payments import LocalstripePayments  # noqa: E402
from hartonomous.billing.workflow import BILLING_RUN  # noqa: E402
from hartonomous.bootstrap import Platform, bootstrap  # noqa: E402
from hartonomous.domain.tenants import Tenant  # noqa: E402
from hartonomous.generation.prompting import assemble  # noqa: E402
from hartonomous.generation.service import GenerateRequest, Outcome  # noqa: E402
from hartonomous.inference.types import Completion, ModelRef  # noqa: E402
from hartonomous.metering.ledger import Usage  # noqa: E402
from hartonomous.services.clock import new_id, utcnow  # noqa: E402
from hartonomous.settings import Settings  # noqa: E402
from hartonomous.store.schema import (  # noqa: E402
    credit_accounts,
    credit_entries,
    credit_grants,
    tenants,
)

LOCALSTRIPE = Path.home() / ".cache/hartonomous/localstripe/1.15.10/bin/localstripe"
API_KEY = "sk_test_bench"


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def report(name: str, ms: list[float]) -> dict[str, float]:
    figures = {"n": len(ms), "p50_ms": round(pct(ms, 50), 3), "p95_ms": round(pct(ms, 95), 3),
               "p99_ms": round(pct(ms, 99), 3), "max_ms": round(max(ms), 3)}  # fmt: skip
    print(f"  {name:<34} {json.dumps(figures)}", flush=True)
    return figures


def timed(fn: Callable[[], Any]) -> float:
    started = time.perf_counter()
    fn()
    return (time.perf_counter() - started) * 1000


def populate(p: Platform, count: int, rows: int) -> list[str]:
    """``count`` tenants with an account, three grants and ``rows`` ledger entries each,
    written in bulk (the repository's own paths are what section 1 times)."""
    now = utcnow()
    ids = [new_id() for _ in range(count)]
    with p.engines.write.begin() as conn:
        conn.execute(tenants.insert(), [
            {"id": t, "name": f"bench-{i}", "created_at": now} for i, t in enumerate(ids)
        ])  # fmt: skip
        conn.execute(credit_accounts.insert(), [
            {"tenant_id": t, "mode": "prepaid", "credit_limit": 0, "held": 0, "owed": 0,
             "stripe_customer_id": None, "created_at": now, "updated_at": now} for t in ids
        ])  # fmt: skip
        conn.execute(credit_grants.insert(), [
            {"id": new_id(), "tenant_id": t, "kind": kind, "source": "operator",
             "source_ref": f"{kind}:{n}:{t}", "amount": 10**6 * MICROS, "remaining": 10**6 * MICROS,
             "priority": priority, "expires_at": expires, "created_at": now}
            for t in ids
            for n, (kind, priority, expires) in enumerate((
                ("promotional", 10, now + timedelta(days=30)), ("promotional", 10, None),
                ("paid", 20, None)))
        ])  # fmt: skip
        batch: list[dict[str, Any]] = []
        for t in ids:
            for j in range(rows):
                batch.append({"tenant_id": t, "kind": "settle", "amount": -10_000, "owed": 0,
                              "key": f"search:{t}:{j}", "detail": {}, "invoice_id": None,
                              "created_at": now - timedelta(seconds=rows - j)})  # fmt: skip
            if len(batch) >= 50_000:
                conn.execute(credit_entries.insert(), batch)
                batch = []
        if batch:
            conn.execute(credit_entries.insert(), batch)
    return ids


def checks(args: argparse.Namespace) -> dict[str, Any]:
    print(f"1. credits at {args.tenants} tenants x {args.rows} ledger rows", flush=True)
    with tempfile.TemporaryDirectory() as folder:
        p = bootstrap(Settings(data_dir=Path(folder)))
        started = time.perf_counter()
        ids = populate(p, args.tenants, args.rows)
        print(f"  populated in {time.perf_counter() - started:.1f} s", flush=True)
        with p.engines.read.connect() as conn:
            entries = conn.execute(sa.select(sa.func.count()).select_from(credit_entries))
            print(f"  ledger rows: {entries.scalar_one():,}", flush=True)
        rng = random.Random(7)
        estimate = generation_estimate(p.settings.inference_context_tokens, 128, 5)
        search = [Usage("search.queries", 1, "queries")]
        tokens = [Usage("generation.prompt_tokens", 900, "tokens"),
                  Usage("generation.completion_tokens", 128, "tokens")]  # fmt: skip
        out: dict[str, Any] = {}
        for _ in range(50):  # warm the engines and the page cache
            p.credits.balance(rng.choice(ids))
        balance = [timed(lambda: p.credits.balance(rng.choice(ids))) for _ in range(args.samples)]
        out["balance"] = report("balance (a read)", balance)
        require = [
            timed(lambda: p.credits.require(rng.choice(ids[:100]), 10_000, "a search"))
            for _ in range(args.samples)
        ]
        out["require"] = report("require (a search's check)", require)
        holds, settles, pairs = [], [], []
        for i in range(args.samples):
            tenant, key = rng.choice(ids), f"receipt:bench-{i}"
            held = timed(partial(p.credits.hold, tenant, key, estimate, "a generation"))

            def settle(tenant: str = tenant, key: str = key) -> None:
                with p.uow_factory(write=True, tenant_id=tenant) as uow:
                    uow.usage.record(tenant, key, tokens, utcnow())
                    uow.commit()

            settled = timed(settle)
            holds.append(held)
            settles.append(settled)
            pairs.append(held + settled)
        out["hold"] = report("hold (a write)", holds)
        out["settle"] = report("settle (usage + debit, a write)", settles)
        out["hold_and_settle"] = report("hold + settle", pairs)
        tenant = ids[0]
        searches = []
        for i in range(args.samples):

            def one_search(i: int = i) -> None:
                with p.uow_factory(write=True, tenant_id=tenant) as uow:
                    uow.usage.record(tenant, f"search:more-{i}", search, utcnow())
                    uow.commit()

            searches.append(timed(one_search))
        out["search_settle"] = report("a search's usage + debit", searches)
        page = [timed(lambda: p.credits.ledger(rng.choice(ids), 50, None)) for _ in range(200)]
        out["ledger_page"] = report("ledger page of 50", page)
        p.close()
    return out


@contextmanager
def settlement_off() -> Iterator[None]:
    original = CreditRepository.settle
    CreditRepository.settle = lambda self, *a, **k: None  # type: ignore[method-assign]
    try:
        yield
    finally:
        CreditRepository.settle = original  # type: ignore[method-assign]


def receipts(args: argparse.Namespace) -> dict[str, Any]:
    print("2. a receipt's write, with and without its debit", flush=True)
    with tempfile.TemporaryDirectory() as folder:
        p = bootstrap(Settings(data_dir=Path(folder)))
        tenant = new_id()
        with p.uow_factory(write=True) as uow:
            uow.tenants.add(Tenant(tenant, "bench", utcnow()))
            uow.commit()
        model = ModelRef("builtin", "0" * 64, "gemma-3-270m", None)
        request = GenerateRequest(prompt="What does the bench measure?", max_tokens=64)
        assembled = assemble(request.prompt, [], context_tokens=2048, max_tokens=64)

        def write(i: int) -> tuple[float, float]:
            """(the receipt's transaction, the whole record: staging its three atoms' bytes
            in the blob store, then that transaction)."""
            completion = Completion(f"answer number {i}", "stop", 40, 64)
            outcome = Outcome(new_id(), tenant, request, model, assembled, completion, {})
            staged = [p.atoms.stage(f"{text} {i}".encode())
                      for text in ("prompt", "output", "card")]  # fmt: skip
            try:
                transaction = timed(lambda: p.generation._write(outcome, staged))
            finally:
                for blob in staged:
                    blob.discard()
            completion = Completion(f"another answer {i}", "stop", 40, 64)
            outcome = Outcome(new_id(), tenant, request, model, assembled, completion, {})
            return transaction, timed(lambda: p.generation.record(outcome))

        for i in range(50):
            write(i)
        runs: dict[str, list[tuple[float, float]]] = {"with": [], "without": []}
        for i in range(args.samples):
            if i % 2:
                with settlement_off():
                    runs["without"].append(write(10_000 + i))
            else:
                runs["with"].append(write(10_000 + i))
        out: dict[str, Any] = {}
        for name, label in (("with", "with its debit"), ("without", "settlement off")):
            out[f"transaction_{name}"] = report(
                f"receipt's transaction, {label}", [t for t, _ in runs[name]]
            )
            out[f"record_{name}"] = report(
                f"record (+ staging), {label}", [r for _, r in runs[name]]
            )
        added = {
            q: round(out["transaction_with"][f"{q}_ms"] - out["transaction_without"][f"{q}_ms"], 3)
            for q in ("p50", "p95")
        }
        print(f"  the debit adds {added['p50']} ms at p50, {added['p95']} at p95", flush=True)
        out["added_ms"] = added
        p.close()
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def localstripe() -> Iterator[str]:
    if not LOCALSTRIPE.exists():
        raise SystemExit(f"localstripe is missing at {LOCALSTRIPE}: run `make localstripe`")
    port = free_port()
    launcher = ROOT / "scripts/localstripe-in-memory.py"  # it says why
    proc = subprocess.Popen(
        [str(LOCALSTRIPE.parent / "python"), str(launcher), "--from-scratch", "--port", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 20
    while True:
        try:
            request = urllib.request.Request(
                f"{base}/v1/customers?limit=1", headers={"Authorization": f"Bearer {API_KEY}"}
            )
            urllib.request.urlopen(request, timeout=1).close()
            break
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
    try:
        yield base
    finally:
        proc.terminate()
        proc.wait(10)


class Counted(LocalstripePayments):
    """Counts the Stripe requests the run sends."""

    calls = 0

    def __init__(self, *a: Any, **k: Any) -> None:
        super().__init__(*a, **k)
        inner = self._client._requestor

        def request(*args: Any, **kwargs: Any) -> Any:
            Counted.calls += 1
            return original(*args, **kwargs)

        original = inner.request
        inner.request = request  # type: ignore[method-assign]


def billing_run(args: argparse.Namespace) -> dict[str, Any]:
    print(f"3. a billing run over {args.billed} postpaid tenants against localstripe", flush=True)
    folder = Path(tempfile.mkdtemp())
    try:
        with localstripe() as base:
            payments = Counted(API_KEY, None, api_base=base)
            settings = Settings(data_dir=folder, billing_retry_first_ms=200)
            p = bootstrap(settings, functions=indexed_app().get_functions(), payments=payments)
            runtime.use(p)
            started = time.perf_counter()
            ids, owed = [], {}
            client = payments.client
            for i in range(args.billed):
                tenant = new_id()
                with p.uow_factory(write=True) as uow:
                    uow.tenants.add(Tenant(tenant, f"postpaid-{i}", utcnow()))
                    uow.commit()
                p.credits.set_mode(tenant, postpaid=True, credit_limit=10**6)
                with p.uow_factory(write=True, tenant_id=tenant) as uow:
                    grant = uow.credits.grants(tenant)[0]
                    uow.credits.settle(tenant, "burn", grant.remaining, {}, utcnow())
                    tokens = 100_000 * (i % 50 + 1)  # 40 to 2,000 credits: cents
                    uow.usage.record(tenant, f"receipt:{i}",
                                     [Usage("generation.completion_tokens", tokens, "tokens")],
                                     utcnow())  # fmt: skip
                    uow.commit()
                customer = p.payments.customer(tenant)
                pm = client.v1.payment_methods.create(params={"type": "card", "card": {
                    "number": "4242424242424242", "exp_month": 12, "exp_year": 2030,
                    "cvc": "123"}})  # fmt: skip
                client.v1.payment_methods.attach(pm.id, params={"customer": customer})
                client.v1.customers.update(
                    customer, params={"invoice_settings": {"default_payment_method": pm.id}}
                )
                ids.append(tenant)
                owed[tenant] = p.credits.balance(tenant).owed
            print(f"  set up {args.billed} customers in {time.perf_counter() - started:.1f} s "
                  f"({Counted.calls} Stripe calls)", flush=True)  # fmt: skip
            now = utcnow()
            period = Period("bench", now - timedelta(hours=1), now + timedelta(seconds=1))
            time.sleep(1.1)
            p.start_background()
            calls_before = Counted.calls
            assert p.workflows is not None
            wf = p.workflows.client

            async def run() -> dict[str, Any]:
                await wf.start_new(BILLING_RUN, "billing-bench",
                                   {"period": period.to_json(), "retry_first_ms": 200})  # fmt: skip
                while True:
                    status = await wf.get_status("billing-bench")
                    value = status.runtime_status.value if status.runtime_status else None
                    if value in ("Completed", "Failed", "Terminated"):
                        return {"status": value, "output": status.output}
                    await asyncio.sleep(0.2)

            started = time.perf_counter()
            # --direct: the same steps without the Durable host, as many at a time
            done = direct(p, period) if args.direct else asyncio.run(run())
            wall = time.perf_counter() - started
            calls = Counted.calls - calls_before
            output = done["output"]
            print(f"  run: {done['status']} {json.dumps(output)[:300]}", flush=True)
            wrong = 0
            for tenant in ids:
                (invoice,) = p.payments.invoices(tenant)
                expected = to_cents(owed[tenant], settings.billing_cents_per_credit)
                if not (invoice.status == "paid" and invoice.amount_cents == expected
                        and invoice.stripe_total_cents == expected
                        and invoice.difference_cents == 0):  # fmt: skip
                    wrong += 1
            figures = {"tenants": args.billed, "status": done["status"],
                       "billed": output["billed"], "failed": len(output["failed"]),
                       "cents": output["cents"], "wall_s": round(wall, 1),
                       "per_tenant_ms": round(wall / args.billed * 1000, 1),
                       "stripe_calls": calls, "invoices_wrong": wrong}  # fmt: skip
            print(f"  {json.dumps(figures)}", flush=True)
            runtime.use(None)
            p.close()
            return figures
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def direct(p: Platform, period: Period) -> dict[str, Any]:
    """``hartonomous billing run``'s steps on a pool as wide as the run's waves."""
    from concurrent.futures import ThreadPoolExecutor

    from hartonomous.billing.workflow import WAVE

    def one(tenant: str) -> dict[str, Any]:
        billed = p.payments.bill(tenant, period)
        reconciled = p.payments.reconcile(tenant, period)
        return {**billed, "difference_cents": reconciled.get("difference_cents")}

    with ThreadPoolExecutor(WAVE) as pool:
        results = list(pool.map(one, p.payments.due(period)))
    billed = [r for r in results if r.get("status") == "paid"]
    return {
        "status": "Completed",
        "output": {
            "billed": len(billed),
            "failed": [],
            "cents": sum(r["amount_cents"] for r in billed),
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tenants", type=int, default=1000)
    parser.add_argument("--rows", type=int, default=1000)
    parser.add_argument("--samples", type=int, default=2000)
    parser.add_argument("--billed", type=int, default=1000)
    parser.add_argument("--only", choices=["checks", "receipts", "run"])
    parser.add_argument(
        "--direct", action="store_true", help="section 3 without the Durable host (a baseline)"
    )
    args = parser.parse_args()
    print(f"machine: {os.cpu_count()} cores; python {sys.version.split()[0]}", flush=True)
    results: dict[str, Any] = {}
    if args.only in (None, "checks"):
        results["checks"] = checks(args)
    if args.only in (None, "receipts"):
        results["receipts"] = receipts(args)
    if args.only in (None, "run"):
        results["run"] = billing_run(args)
    print(json.dumps(results))


if __name__ == "__main__":
    main()
