"""Operator commands for credits and billing: grants, balances, a billing run by hand.

Credits come from a payment or from here: no API key, admin or not, can grant any."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from hartonomous.billing.credits import Balance
from hartonomous.billing.money import to_credits
from hartonomous.billing.payments_service import Period
from hartonomous.bootstrap import bootstrap
from hartonomous.cli.options import DataDir, settings_for
from hartonomous.services import tenants as tenant_service

console = Console()
credits_app = typer.Typer(help="Grant credits and show balances.", no_args_is_help=True)
billing_app = typer.Typer(help="Postpaid billing by hand.", no_args_is_help=True)
Tenant = Annotated[str, typer.Argument(help="Tenant name or id.")]


def show_balance(name: str, balance: Balance) -> None:
    table = Table(title=f"credits of {name}", show_header=False, box=None)
    table.add_row("mode", balance.mode)
    for label, micros in (("available", balance.available), ("granted", balance.granted),
                          ("held", balance.held), ("owed", balance.owed),
                          ("credit limit", balance.credit_limit)):  # fmt: skip
        table.add_row(label, f"{to_credits(micros):,.6f}".rstrip("0").rstrip("."))
    console.print(table)


def _date(value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise typer.BadParameter(f"{value!r} is not a date (YYYY-MM-DD)") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


@credits_app.command("grant")
def grant(
    tenant: Tenant,
    amount: Annotated[float, typer.Argument(help="Credits to grant.")],
    promotional: Annotated[
        bool, typer.Option("--promotional", help="Promotional credits (burn first).")
    ] = False,
    expires: Annotated[
        str | None, typer.Option(help="When they expire (YYYY-MM-DD or ISO 8601, UTC).")
    ] = None,
    reason: Annotated[str | None, typer.Option(help="Kept in the ledger entry.")] = None,
    data_dir: DataDir = None,
) -> None:
    """Grant a tenant credits (paid by default)."""
    platform = bootstrap(settings_for(data_dir))
    found = tenant_service.find_tenant(platform.uow_factory, name_or_id=tenant)
    made = platform.credits.grant(
        found.id, amount, promotional=promotional, expires_at=_date(expires), reason=reason
    )
    typer.echo(f"granted {to_credits(made.amount):g} {made.kind} credits to {found.name}")
    show_balance(found.name, platform.credits.balance(found.id))


@credits_app.command("show")
def show(tenant: Tenant, data_dir: DataDir = None) -> None:
    """A tenant's balance."""
    platform = bootstrap(settings_for(data_dir))
    found = tenant_service.find_tenant(platform.uow_factory, name_or_id=tenant)
    show_balance(found.name, platform.credits.balance(found.id))


@billing_app.command("run")
def run(
    period: Annotated[
        str | None, typer.Option(help="YYYY-MM (UTC month); default: last month.")
    ] = None,
    data_dir: DataDir = None,
) -> None:
    """Bill every postpaid tenant for a month now, in this process (the monthly timer runs
    the same steps as a workflow). Safe to repeat: nothing is billed twice."""
    platform = bootstrap(settings_for(data_dir))
    chosen = Period.month_before(datetime.now(UTC))
    if period is not None:
        try:
            start = datetime.strptime(period, "%Y-%m").replace(tzinfo=UTC)
        except ValueError:
            raise typer.BadParameter(f"{period!r} is not a month (YYYY-MM)") from None
        chosen = Period.month_before(
            start.replace(year=start.year + 1, month=1) if start.month == 12
            else start.replace(month=start.month + 1)
        )  # fmt: skip
    table = Table("tenant", "status", "cents", "difference")
    for tenant_id in platform.payments.due(chosen):
        billed = platform.payments.bill(tenant_id, chosen)
        reconciled = platform.payments.reconcile(tenant_id, chosen)
        table.add_row(tenant_id, str(billed.get("status")), str(billed.get("amount_cents", "")),
                      str(reconciled.get("difference_cents", "")))  # fmt: skip
    console.print(table)
