"""Operator commands that work on the store directly: tenants, keys, status."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from hartonomous.bootstrap import bootstrap
from hartonomous.cli.options import DataDir, settings_for
from hartonomous.domain.tenants import Scope
from hartonomous.errors import Conflict
from hartonomous.services import tenants as tenant_service
from hartonomous.store import migrate

console = Console()
tenant_app = typer.Typer(help="Manage tenants.", no_args_is_help=True)
key_app = typer.Typer(help="Manage API keys.", no_args_is_help=True)


@tenant_app.command("create")
def tenant_create(name: str, data_dir: DataDir = None) -> None:
    """Create a tenant; its first API key (admin scope) is the last line printed."""
    platform = bootstrap(settings_for(data_dir))
    tenant, issued = tenant_service.create_tenant(platform.uow_factory, name=name)
    console.print(f"tenant {tenant.name} created: id {tenant.id}", highlight=False)
    console.print("API key (admin scope; shown once, store it now):", highlight=False)
    typer.echo(issued.secret)


@key_app.command("create")
def key_create(
    tenant: Annotated[str, typer.Argument(help="Tenant name or id.")],
    scope: Annotated[Scope, typer.Option(help="What the key may do.")] = Scope.READ,
    data_dir: DataDir = None,
) -> None:
    """Create an API key for a tenant; the key is the last line printed."""
    platform = bootstrap(settings_for(data_dir))
    issued = tenant_service.create_key(platform.uow_factory, tenant=tenant, scope=scope)
    console.print(f"API key {issued.key.id} ({scope} scope; shown once):", highlight=False)
    typer.echo(issued.secret)


@key_app.command("list")
def key_list(
    tenant: Annotated[str, typer.Argument(help="Tenant name or id.")],
    limit: Annotated[int, typer.Option(min=1, max=1000, help="Newest first, at most.")] = 100,
    data_dir: DataDir = None,
) -> None:
    """A tenant's API keys, newest first, revoked ones too (never a secret: only hashes are
    stored)."""
    platform = bootstrap(settings_for(data_dir))
    found = tenant_service.find_tenant(platform.uow_factory, name_or_id=tenant)
    page = tenant_service.list_keys(platform.uow_factory, tenant_id=found.id, limit=limit)
    table = Table("id", "scope", "prefix", "created", "revoked", box=None)
    for key in page.items:
        revoked = key.revoked_at.isoformat(timespec="seconds") if key.revoked_at else ""
        created = key.created_at.isoformat(timespec="seconds")
        table.add_row(key.id, key.scope.value, key.display_prefix, created, revoked)
    console.print(table)
    if page.next_cursor:
        console.print(f"(the newest {limit} shown; --limit for more)", highlight=False)


@key_app.command("revoke")
def key_revoke(
    key_id: Annotated[str, typer.Argument(help="The key's id (from 'key list').")],
    force: Annotated[
        bool,
        typer.Option(
            "--force",
            help="Revoke it even if it is the tenant's last admin key (a leaked one): the "
            "tenant then needs 'key create TENANT --scope admin' to manage its keys again.",
        ),
    ] = False,
    data_dir: DataDir = None,
) -> None:
    """Revoke an API key: every instance refuses it (401) from its next request on."""
    platform = bootstrap(settings_for(data_dir))
    key = tenant_service.revoke_key(
        platform.uow_factory, key_id=key_id, tenant_id=None, allow_last_admin=force
    )
    assert key.revoked_at is not None
    when = key.revoked_at.isoformat(timespec="seconds")
    console.print(f"API key {key.id} ({key.scope} scope) revoked at {when}", highlight=False)


def init(
    data_dir: DataDir = None,
    demo_tenant: Annotated[
        str | None, typer.Option(help="Create this tenant on first run and print its key.")
    ] = None,
) -> None:
    """Create or migrate the embedded store (idempotent)."""
    platform = bootstrap(settings_for(data_dir))
    console.print(f"store ready in {platform.settings.data_dir.resolve()}", highlight=False)
    if demo_tenant is None:
        return
    try:
        _, issued = tenant_service.create_tenant(platform.uow_factory, name=demo_tenant)
    except Conflict:
        console.print(
            f"tenant {demo_tenant!r} exists; make another key with "
            f"'hartonomous key create {demo_tenant} --scope write'",
            highlight=False,
        )
        return
    console.print(f"created tenant {demo_tenant!r}; its API key (shown once):", highlight=False)
    typer.echo(issued.secret)


def status(data_dir: DataDir = None) -> None:
    """What the embedded store holds."""
    settings = settings_for(data_dir)
    platform = bootstrap(settings, run_migrations=False)
    current = migrate.current_revision(platform.engines)
    tenants = atoms = blob_count = blob_bytes = 0
    if current is not None:  # an uninitialised store has no tables to count
        with platform.uow_factory(write=False) as uow:
            tenants, atoms = uow.tenants.count(), uow.atoms.count()
            blob_count, blob_bytes = uow.blobs.totals()
    table = Table(show_header=False, box=None)
    table.add_row("database", settings.resolved_database_url)
    table.add_row("schema", f"{current or 'not initialised'} (head {migrate.head_revision()})")
    table.add_row("blob backend", settings.blob_backend)
    table.add_row("tenants", str(tenants))
    table.add_row("atoms", str(atoms))
    table.add_row("stored bytes", f"{blob_bytes} in {blob_count} blobs")
    console.print(table)
