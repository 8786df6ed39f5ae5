"""``hartonomous ingest`` and ``hartonomous search``: clients of the HTTP API."""

from __future__ import annotations

import json
import mimetypes
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn
from rich.table import Table

from hartonomous.cli.atoms import (
    CHUNK,
    SESSION_THRESHOLD,
    TIMEOUT,
    SessionThreshold,
    _fail,
    upload_by_session,
)
from hartonomous.cli.options import DEFAULT_URL, ApiKey, ApiUrl
from hartonomous.knowledge.parsing import is_supported

out = Console()
err = Console(stderr=True)
FINISHED = {"Completed", "Failed", "Terminated"}


def _files(paths: list[Path]) -> Iterator[Path]:
    """Files named, and the supported files under folders named (hidden ones skipped)."""
    for path in paths:
        if path.is_dir():
            for child in sorted(path.rglob("*")):
                hidden = any(part.startswith(".") for part in child.relative_to(path).parts)
                if child.is_file() and not hidden and is_supported(_media_type(child), child.name):
                    yield child
        elif path.is_file():
            yield path
        else:
            err.print(f"[red]no such file or folder:[/red] {path}")
            raise typer.Exit(2)


def _media_type(path: Path) -> str:
    return mimetypes.guess_type(path.name)[0] or "application/octet-stream"


def ingest(
    paths: Annotated[list[Path], typer.Argument(help="Files and folders to ingest.")],
    api_key: ApiKey,
    url: ApiUrl = DEFAULT_URL,
    wait: Annotated[bool, typer.Option(help="Wait for the ingestion workflows.")] = True,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for all of them.")] = 3600,
    session_threshold: SessionThreshold = SESSION_THRESHOLD,
) -> None:
    """Upload documents and ingest them; prints one JSON line per document."""
    files = list(_files(paths))
    headers = {"Authorization": f"Bearer {api_key}"}
    started: list[tuple[Path, dict[str, Any]]] = []
    with (
        httpx.Client(base_url=url, headers=headers, timeout=TIMEOUT) as client,
        Progress(
            "[progress.description]{task.description}",
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=err,
            transient=True,
        ) as progress,
    ):
        uploading = progress.add_task("uploading", total=len(files))
        for path in files:
            if path.stat().st_size >= session_threshold:
                response = upload_by_session(
                    client,
                    path,
                    purpose="document",
                    media_type=_media_type(path),
                    metadata={"filename": path.name},
                    progress=progress,
                    task=progress.add_task(f"sending {path.name}", total=path.stat().st_size),
                )
            else:
                response = client.post(
                    "/v1/ingestions",
                    content=_read(path),
                    headers={
                        "Content-Type": _media_type(path),
                        "Content-Length": str(path.stat().st_size),
                        "X-Atom-Metadata": json.dumps({"filename": path.name}),
                    },
                )
            if response.status_code != 202:
                err.print(f"[red]{path}[/red]")
                _fail(response)
            started.append((path, response.json()))
            progress.advance(uploading)
        if wait:
            waiting = progress.add_task("ingesting", total=len(started))
            deadline = time.monotonic() + timeout
            pending = dict(started)
            while pending and time.monotonic() < deadline:
                for path, info in list(pending.items()):
                    status = client.get(info["status_url"]).json()
                    if status.get("runtimeStatus") in FINISHED:
                        info["status"] = status["runtimeStatus"]
                        info["error"] = status.get("error")
                        info["result"] = status.get("output")
                        del pending[path]
                        progress.advance(waiting)
                time.sleep(0.2)
    failed = 0
    for path, info in started:
        typer.echo(json.dumps({"path": str(path), **info}))
        failed += info.get("status") not in (None, "Completed")
    if failed:
        raise typer.Exit(1)


def _read(path: Path) -> Iterator[bytes]:
    with path.open("rb") as f:
        while chunk := f.read(CHUNK):
            yield chunk


def search(
    query: Annotated[str, typer.Argument(help="What to look for.")],
    api_key: ApiKey,
    url: ApiUrl = DEFAULT_URL,
    k: Annotated[int, typer.Option(min=1, max=100, help="How many results.")] = 10,
    mode: Annotated[str, typer.Option(help="vector, keyword or hybrid.")] = "hybrid",
    as_json: Annotated[bool, typer.Option("--json", help="Print the raw JSON.")] = False,
) -> None:
    """Search your knowledge and print a table."""
    response = httpx.post(
        f"{url}/v1/search",
        json={"query": query, "k": k, "mode": mode},
        headers={"Authorization": f"Bearer {api_key}"},
        timeout=TIMEOUT,
    )
    if response.status_code != 200:
        _fail(response)
    body = response.json()
    if as_json:
        typer.echo(json.dumps(body, indent=2))
        return
    table = Table("rank", "score", "document", "#", "text", show_lines=False)
    for hit in body["results"]:
        text = " ".join(hit["text"].split())
        table.add_row(
            str(hit["rank"]),
            f"{hit['score']:.3f}",
            (hit["document_id"] or "")[:8],
            str(hit["ordinal"]),
            text[:100] + ("…" if len(text) > 100 else ""),
        )
    out.print(table)
