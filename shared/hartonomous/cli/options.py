"""Options shared by several commands."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from hartonomous.settings import Settings

DataDir = Annotated[
    Path | None,
    typer.Option(
        "--data-dir",
        envvar="HARTONOMOUS_DATA_DIR",
        help="Folder of the embedded store (default ./.hartonomous).",
    ),
]
ApiUrl = Annotated[
    str,
    typer.Option("--url", envvar="HARTONOMOUS_URL", help="Base URL of the Hartonomous API."),
]
ApiKey = Annotated[
    str,
    typer.Option("--api-key", envvar="HARTONOMOUS_API_KEY", help="API key (hk_...)."),
]
DEFAULT_URL = "http://127.0.0.1:7071"


def settings_for(data_dir: Path | None) -> Settings:
    return Settings(data_dir=data_dir) if data_dir is not None else Settings()
