"""Operator commands for tenants' plans: the limits admission holds each tenant to."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from hartonomous.admission.plans import LIMITS, TenantPlan
from hartonomous.bootstrap import bootstrap
from hartonomous.cli.credits import show_balance
from hartonomous.cli.options import DataDir, settings_for
from hartonomous.services import tenants as tenant_service

console = Console()
plan_app = typer.Typer(help="Show and set tenants' plans (rate and generation limits).",
                       no_args_is_help=True)  # fmt: skip
Tenant = Annotated[str, typer.Argument(help="Tenant name or id.")]


def _show(name: str, found: TenantPlan) -> None:
    table = Table(title=f"plan of {name}", show_header=False, box=None)
    for limit in LIMITS:
        source = "default" if limit in found.defaults else "set"
        table.add_row(limit.replace("_", "-"), f"{getattr(found.plan, limit):g}", source)
    console.print(table)


@plan_app.command("show")
def plan_show(tenant: Tenant, data_dir: DataDir = None) -> None:
    """A tenant's limits, and which are the default plan's."""
    platform = bootstrap(settings_for(data_dir))
    found = tenant_service.find_tenant(platform.uow_factory, name_or_id=tenant)
    _show(found.name, platform.admission.tenant_plan(found.id))


@plan_app.command("set")
def plan_set(
    tenant: Tenant,
    requests_per_second: Annotated[
        float | None, typer.Option(help="Requests a second, on average (the bucket's refill).")
    ] = None,
    burst: Annotated[int | None, typer.Option(help="Requests at once after a pause.")] = None,
    concurrent_generations: Annotated[
        int | None, typer.Option(help="Generations running or queued at once.")
    ] = None,
    tokens_per_minute: Annotated[
        int | None, typer.Option(help="Model tokens (prompt and output) a minute.")
    ] = None,
    postpaid: Annotated[
        bool | None,
        typer.Option(
            "--postpaid/--prepaid",
            help="Postpaid: work goes on to --credit-limit and is invoiced monthly through "
            "Stripe. Prepaid (the default): work stops when the credits run out.",
        ),
    ] = None,
    credit_limit: Annotated[
        float | None, typer.Option(help="A postpaid tenant's credit limit, in credits.")
    ] = None,
    data_dir: DataDir = None,
) -> None:
    """Set some of a tenant's limits (the others keep their value); every instance holds
    them within a second."""
    given = {"requests_per_second": requests_per_second, "burst": burst,
             "concurrent_generations": concurrent_generations,
             "tokens_per_minute": tokens_per_minute}  # fmt: skip
    limits: dict[str, float | None] = {k: v for k, v in given.items() if v is not None}
    if credit_limit is not None and not postpaid:
        raise typer.BadParameter("--credit-limit is for a postpaid tenant: add --postpaid")
    if not limits and postpaid is None:
        raise typer.BadParameter("give at least one limit, e.g. --requests-per-second 50")
    platform = bootstrap(settings_for(data_dir))
    found = tenant_service.find_tenant(platform.uow_factory, name_or_id=tenant)
    if limits:
        _show(found.name, platform.admission.plans.set(found.id, limits))
    if postpaid is not None:
        balance = platform.credits.set_mode(found.id, postpaid=postpaid, credit_limit=credit_limit)
        show_balance(found.name, balance)
