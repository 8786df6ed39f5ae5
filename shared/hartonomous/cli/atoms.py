"""``hartonomous atoms``: a client of the HTTP API, streaming both ways with progress."""

from __future__ import annotations

import json
import mimetypes
import sys
import time
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
SESSION_THRESHOLD = 64 * CHUNK
SessionThreshold = Annotated[
    int,
    typer.Option(
        "--session-threshold",
        envvar="HARTONOMOUS_SESSION_THRESHOLD",
        min=1,
        help="Files of at least this many bytes go through an upload session "
        "(POST /v1/uploads: straight to Blob Storage on Azure), not one request.",
    ),
]
COMPLETE_ATTEMPTS = 120  # a 409 with Retry-After: the blob trigger is completing it
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


def upload_by_session(
    client: httpx.Client,
    path: Path,
    *,
    purpose: str,
    media_type: str | None,
    metadata: dict[str, Any],
    progress: Progress,
    task: Any,
) -> httpx.Response:
    """Declare the file, send its bytes where the answer says, complete it: the answer of
    ``complete`` (an atom, or a started workflow), as the one-request route would give."""
    size = path.stat().st_size
    body = {"size": size, "media_type": media_type, "metadata": metadata, "purpose": purpose}
    opened = client.post("/v1/uploads", json=body)
    if opened.status_code != 201:
        _fail(opened)
    target = opened.json()
    with path.open("rb") as f:
        if "x-ms-blob-type" in {k.lower() for k in target["headers"]}:
            _to_blob_storage(target["url"], f, size, progress, task)
        else:  # the app's own PUT: the URL carries its token, no API key goes with it
            sent = httpx.request(
                target["method"],
                target["url"],
                headers={**target["headers"], "Content-Length": str(size)},
                content=_chunks(f, progress, task),
                timeout=TIMEOUT,
            )
            if sent.status_code >= 300:
                _fail(sent)
    for _ in range(COMPLETE_ATTEMPTS):
        done = client.post(f"/v1/uploads/{target['upload_id']}/complete")
        if done.status_code != 409 or "retry-after" not in done.headers:
            return done
        time.sleep(min(float(done.headers["retry-after"]), 5.0))
    return done


def _to_blob_storage(url: str, f: BinaryIO, size: int, progress: Progress, task: Any) -> None:
    """A SAS URL: the official client cuts the file into blocks (a single Put Blob stops at
    5000 MiB) and retries them."""
    from azure.storage.blob import BlobClient

    blob = BlobClient.from_blob_url(url)
    blob.upload_blob(
        f,
        length=size,
        overwrite=True,
        max_concurrency=4,
        progress_hook=lambda current, _total: progress.update(task, completed=current),
    )


@atoms_app.command("put")
def put(
    path: Annotated[Path, typer.Argument(exists=True, dir_okay=False, readable=True)],
    api_key: ApiKey,
    url: ApiUrl = DEFAULT_URL,
    media_type: Annotated[str | None, typer.Option(help="Default: guessed from the name.")] = None,
    metadata: Annotated[str | None, typer.Option(help="A JSON object to attach.")] = None,
    session_threshold: SessionThreshold = SESSION_THRESHOLD,
) -> None:
    """Upload a file as an atom and print the atom as JSON."""
    size = path.stat().st_size
    if size >= session_threshold:
        try:
            meta = json.loads(metadata) if metadata else {"filename": path.name}
        except ValueError as exc:
            raise typer.BadParameter(f"--metadata is not JSON: {exc}") from exc
        auth = {"Authorization": f"Bearer {api_key}"}
        with httpx.Client(base_url=url, headers=auth, timeout=TIMEOUT) as client, _progress() as p:
            task = p.add_task(f"uploading {path.name}", total=size)
            media = media_type or mimetypes.guess_type(path.name)[0]
            response = upload_by_session(
                client, path, purpose="atom", media_type=media, metadata=meta, progress=p, task=task
            )
        if response.status_code not in (200, 201):
            _fail(response)
        typer.echo(json.dumps(response.json(), indent=2))
        return
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
