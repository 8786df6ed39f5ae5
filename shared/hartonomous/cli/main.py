"""Entry point: ``hartonomous serve | init | status | tenant | key | atoms``."""

from __future__ import annotations

from typing import Annotated

import typer

from hartonomous.cli import admin, knowledge, worker
from hartonomous.cli.atoms import atoms_app
from hartonomous.cli.concepts import concepts_app
from hartonomous.cli.credits import billing_app, credits_app
from hartonomous.cli.models import models_app
from hartonomous.cli.options import DataDir, settings_for
from hartonomous.cli.plans import plan_app
from hartonomous.errors import HartonomousError

app = typer.Typer(
    help="Hartonomous: atoms, search and receipts on one machine or on Azure.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.add_typer(admin.tenant_app, name="tenant")
app.add_typer(admin.key_app, name="key")
app.add_typer(atoms_app, name="atoms")
app.add_typer(models_app, name="models")
app.add_typer(plan_app, name="plan")
app.add_typer(credits_app, name="credits")
app.add_typer(billing_app, name="billing")
app.add_typer(concepts_app, name="concepts")
app.command()(admin.init)
app.command()(admin.status)
app.command()(knowledge.ingest)
app.command()(knowledge.search)
app.command("worker")(worker.serve_worker)


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 7071,
    data_dir: DataDir = None,
) -> None:
    """Serve the API (docs at /docs) on the embedded store."""
    import uvicorn

    # The composition root of the local world: the same blueprints as the Function App give
    # the local Durable host its orchestrators and activities, and the timer triggers.
    from functions import indexed_app, runtime
    from hartonomous.api.app import create_app
    from hartonomous.api.http_protocol import problem_protocol
    from hartonomous.bootstrap import bootstrap

    platform = bootstrap(settings_for(data_dir), functions=indexed_app().get_functions())
    runtime.use(platform)
    typer.echo(f"Hartonomous on http://{host}:{port} (docs at /docs)")
    uvicorn.run(
        create_app(platform), host=host, port=port, log_level="info", http=problem_protocol()
    )


def main() -> None:
    try:
        app()
    except HartonomousError as exc:
        typer.echo(f"error: {exc.detail}", err=True)
        raise SystemExit(1) from None
