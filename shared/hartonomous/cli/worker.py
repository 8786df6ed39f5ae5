"""``hartonomous worker``: the GPU worker's OpenAI-compatible API, served on this machine."""

from __future__ import annotations

from typing import Annotated

import typer

from hartonomous.cli.options import DataDir, settings_for


def serve_worker(
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8080,
    insecure: Annotated[
        bool,
        typer.Option(
            "--insecure",
            help="Serve without HARTONOMOUS_WORKER_KEY: anyone who reaches the port may call "
            "it. For local use only.",
        ),
    ] = False,
    data_dir: DataDir = None,
) -> None:
    """Serve the GPU worker: OpenAI-compatible completions, chat and embeddings.

    Tenants' models are read from the store the HARTONOMOUS_* settings name. It refuses to
    start without HARTONOMOUS_WORKER_KEY unless --insecure.
    """
    import uvicorn

    from hartonomous.bootstrap import bootstrap
    from hartonomous.worker.app import MISSING_KEY, create_worker_app

    settings = settings_for(data_dir)
    if settings.worker_key is None and not insecure:  # before the store or a model loads
        typer.echo(f"error: {MISSING_KEY}", err=True)
        raise typer.Exit(2)
    app = create_worker_app(settings, platform=bootstrap(settings), insecure=insecure)
    typer.echo(f"Hartonomous GPU worker on http://{host}:{port} (docs at /docs)")
    uvicorn.run(app, host=host, port=port, log_level="info")
