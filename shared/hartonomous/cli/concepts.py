"""Operator commands for concepts: a discovery by hand, and the concepts found."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from hartonomous.bootstrap import Platform, bootstrap
from hartonomous.cli.options import DataDir, settings_for
from hartonomous.concepts.discovery import K_MAX
from hartonomous.services import tenants as tenant_service

console = Console()
concepts_app = typer.Typer(help="Discover and list concepts.", no_args_is_help=True)
Tenant = Annotated[str, typer.Argument(help="Tenant name or id.")]
Modality = Annotated[str, typer.Option(help="The chunks' modality.")]


@concepts_app.command("discover")
def discover(
    tenant: Tenant,
    modality: Modality = "text",
    k: Annotated[
        int | None,
        typer.Option(min=2, max=K_MAX, help="Concepts to find (default: by the silhouette)."),
    ] = None,
    seed: Annotated[int, typer.Option(help="Seeds the k-means++ restarts.")] = 0,
    data_dir: DataDir = None,
) -> None:
    """Run a discovery now, in this process (no workflow host needed), and list the result."""
    platform = bootstrap(settings_for(data_dir))
    try:
        found = tenant_service.find_tenant(platform.uow_factory, name_or_id=tenant)
        out = platform.concepts.run_now(found.id, modality, k, "cli", seed=seed)
        clustered, bound = out["clustered"], out["bound"]
        typer.echo(
            f"run {out['run_id']}: {clustered['chunks']} chunks, k={clustered['k']} "
            f"({clustered['k_chosen_by']}); kept {clustered['kept']}, new {clustered['created']}, "
            f"retired {clustered['retired']}; IS_A {bound['is_a']}, RELATED {bound['related']}"
        )
        show(found.id, modality, platform)
    finally:
        platform.close()


@concepts_app.command("list")
def list_concepts(tenant: Tenant, modality: Modality = "text", data_dir: DataDir = None) -> None:
    """The tenant's active concepts of a modality, largest first."""
    platform = bootstrap(settings_for(data_dir))
    try:
        found = tenant_service.find_tenant(platform.uow_factory, name_or_id=tenant)
        show(found.id, modality, platform)
    finally:
        platform.close()


def show(tenant_id: str, modality: str, platform: Platform) -> None:
    items, cursor = [], None
    while True:
        page = platform.concepts.page(tenant_id, cursor, 100, modality)
        items += page.items
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    table = Table(title=f"{modality} concepts")
    for column in ("id", "level", "name", "size", "top terms"):
        table.add_column(column)
    for c in sorted(items, key=lambda c: (-c.level, -c.size)):  # broad concepts first
        table.add_row(c.id, str(c.level), c.name, str(c.size), ", ".join(c.terms[:6]))
    console.print(table)
