"""``hartonomous worker``: the GPU worker's OpenAI-compatible API, served on this machine."""

from __future__ import annotations

from typing import Annotated

import typer

from hartonomous.cli.options import DataDir, settings_for


def serve_worker(
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8080,
    data_dir: DataDir = None,
) -> None:
    """Serve the GPU worker: OpenAI-compatible completions, chat and embeddings.

    Tenants' models are read from the store the HARTONOMOUS_* settings name.
    """
    import uvicorn

    from hartonomous.bootstrap import bootstrap
    from hartonomous.worker import create_worker_app

    settings = settings_for(data_dir)
    app = create_worker_app(settings, platform=bootstrap(settings))
    typer.echo(f"Hartonomous GPU worker on http://{host}:{port} (docs at /docs)")
    uvicorn.run(app, host=host, port=port, log_level="info")
