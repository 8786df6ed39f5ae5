"""``hartonomous atoms``: a client of the HTTP API, streaming both ways with progress."""

from __future__ import annotations

import json
import mimetypes
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any, BinaryIO

import httpx
import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from hartonomous.cli.options import DEFAULT_URL, ApiKey, ApiUrl

CHUNK = 1024 * 1024
# Connect fast or fail; a large transfer may take its time between reads.
TIMEOUT = httpx.Timeout(30.0, read=600.0, write=600.0)
atoms_app = typer.Typer(help="Store and fetch atoms through the API.", no_args_is_help=True)
err = Console(stderr=True)


def _progress() -> Progress:
    return Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=err,
        transient=True,
    )


def _fail(response: httpx.Response) -> None:
    """Print the problem+json detail and exit non-zero."""
    try:
        problem: dict[str, Any] = response.json()
        message = f"{problem.get('title')}: {problem.get('detail')}"
    except ValueError:
        message = response.text or response.reason_phrase
    err.print(f"[red]error {response.status_code}[/red] {message}", highlight=False)
    raise typer.Exit(1)


def _chunks(f: BinaryIO, progress: Progress, task: Any) -> Iterator[bytes]:
    while chunk := f.read(CHUNK):
        progress.update(task, advance=len(chunk))
        yield chunk


@atoms_app.command("put")
def put(
    path: Annotated[Path, typer.Argument(exists=True, dir_okay=False, readable=True)],
    api_key: ApiKey,
    url: ApiUrl = DEFAULT_URL,
    media_type: Annotated[str | None, typer.Option(help="Default: guessed from the name.")] = None,
    metadata: Annotated[str | None, typer.Option(help="A JSON object to attach.")] = None,
) -> None:
    """Upload a file as an atom and print the atom as JSON."""
    size = path.stat().st_size
    headers = {
        "Authorization": f"Bearer {api_key}",
        "Content-Type": media_type
        or mimetypes.guess_type(path.name)[0]
        or "application/octet-stream",
        "Content-Length": str(size),
        "X-Atom-Metadata": metadata or json.dumps({"filename": path.name}),
    }
    with _progress() as progress, path.open("rb") as f:
        task = progress.add_task(f"uploading {path.name}", total=size)
        response = httpx.post(
            f"{url}/v1/atoms", content=_chunks(f, progress, task), headers=headers, timeout=TIMEOUT
        )
    if response.status_code not in (200, 201):
        _fail(response)
    typer.echo(json.dumps(response.json(), indent=2))


@atoms_app.command("get")
def get(
    atom_id: str,
    api_key: ApiKey,
    url: ApiUrl = DEFAULT_URL,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write the bytes here (default stdout).")
    ] = None,
) -> None:
    """Download an atom's bytes."""
    headers = {"Authorization": f"Bearer {api_key}"}
    with httpx.stream(
        "GET", f"{url}/v1/atoms/{atom_id}/content", headers=headers, timeout=TIMEOUT
    ) as response:
        if response.status_code != 200:
            response.read()
            _fail(response)
        total = int(response.headers.get("content-length", 0)) or None
        sink: BinaryIO = output.open("wb") if output else sys.stdout.buffer
        try:
            with _progress() as progress:
                task = progress.add_task(f"downloading {atom_id}", total=total)
                for chunk in response.iter_bytes(CHUNK):
                    sink.write(chunk)
                    progress.update(task, advance=len(chunk))
        finally:
            if output:
                sink.close()
