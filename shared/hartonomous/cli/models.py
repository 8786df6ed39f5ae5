"""``hartonomous models``: add GGUF models, list them, export them; clients of the HTTP API."""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer
from rich.table import Table

from hartonomous.cli.atoms import (
    SESSION_THRESHOLD,
    TIMEOUT,
    SessionThreshold,
    _chunks,
    _fail,
    _progress,
    err,
    upload_by_session,
)
from hartonomous.cli.options import DEFAULT_URL, ApiKey, ApiUrl

models_app = typer.Typer(help="GGUF models as tensor atoms.", no_args_is_help=True)
FINISHED = {"Completed", "Failed", "Terminated"}


@models_app.command("add")
def add(
    path: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="A .gguf file.")],
    api_key: ApiKey,
    url: ApiUrl = DEFAULT_URL,
    name: Annotated[str | None, typer.Option(help="Name (default: general.name).")] = None,
    wait: Annotated[bool, typer.Option(help="Wait until its tensors are stored.")] = True,
    timeout: Annotated[float, typer.Option(help="Seconds to wait.")] = 3600,
    session_threshold: SessionThreshold = SESSION_THRESHOLD,
) -> None:
    """Upload a GGUF model (streamed, with progress) and print the model as JSON."""
    size = path.stat().st_size
    meta: dict[str, Any] = {"filename": path.name} | ({"name": name} if name else {})
    headers = {
        "Authorization": f"Bearer {api_key}",
        "Content-Type": "application/octet-stream",
        "Content-Length": str(size),
        "X-Atom-Metadata": json.dumps(meta),
    }
    with httpx.Client(base_url=url, headers={"Authorization": headers["Authorization"]},
                      timeout=TIMEOUT) as client:  # fmt: skip
        with _progress() as progress, path.open("rb") as f:
            task = progress.add_task(f"uploading {path.name}", total=size)
            if size >= session_threshold:  # straight to Blob Storage on Azure
                response = upload_by_session(
                    client, path, purpose="model", media_type=None, metadata=meta,
                    progress=progress, task=task,
                )  # fmt: skip
            else:
                response = client.post(
                    "/v1/models", content=_chunks(f, progress, task), headers=headers
                )
        if response.status_code != 202:
            _fail(response)
        started = response.json()
        status: dict[str, Any] = {}
        if wait:
            with _progress() as progress:
                task = progress.add_task("storing tensors", total=size)
                deadline = time.monotonic() + timeout
                while time.monotonic() < deadline:
                    status = client.get(started["status_url"]).json()
                    custom = status.get("customStatus") or {}
                    progress.update(task, completed=custom.get("bytes_done", 0))
                    if status.get("runtimeStatus") in FINISHED:
                        break
                    time.sleep(0.2)
        model = client.get(f"/v1/models/{started['model_id']}").json()
    typer.echo(json.dumps(model, indent=2))
    if wait and status.get("runtimeStatus") != "Completed":
        err.print(f"[red]ingestion {status.get('runtimeStatus', 'timed out')}:[/red] "
                  f"{status.get('output') or model.get('error')}")  # fmt: skip
        raise typer.Exit(1)


@models_app.command("list")
def list_models(api_key: ApiKey, url: ApiUrl = DEFAULT_URL) -> None:
    """Your models, newest first."""
    response = httpx.get(
        f"{url}/v1/models", headers={"Authorization": f"Bearer {api_key}"}, timeout=TIMEOUT
    )
    if response.status_code != 200:
        _fail(response)
    table = Table("id", "name", "status", "arch", "params", "blocks", "size", "new", "dedup")
    for m in response.json()["items"]:
        table.add_row(
            m["id"][:8], m["name"], m["status"], m["architecture"] or "",
            f"{(m['parameter_count'] or 0) / 1e6:.0f}M", str(m["block_count"] or ""),
            f"{m['logical_bytes'] / 2**20:.1f} MiB",
            f"{(m['new_bytes'] or 0) / 2**20:.1f} MiB", str(m["dedup_ratio"] or ""),
        )  # fmt: skip
    from rich.console import Console

    Console().print(table)


@models_app.command("export")
def export(
    model_id: Annotated[str, typer.Argument(help="The model's id.")],
    out: Annotated[Path, typer.Argument(help="Where to write the .gguf file.")],
    api_key: ApiKey,
    url: ApiUrl = DEFAULT_URL,
) -> None:
    """Download the model's GGUF file (byte-identical to what was added)."""
    headers = {"Authorization": f"Bearer {api_key}"}
    with httpx.stream("GET", f"{url}/v1/models/{model_id}/gguf", headers=headers,
                      timeout=TIMEOUT) as response:  # fmt: skip
        if response.status_code != 200:
            response.read()
            _fail(response)
        total = int(response.headers.get("content-length", 0))
        expected = response.headers.get("etag", "").strip('"')
        digest = hashlib.sha256()
        partial = out.with_name(out.name + ".part")
        with _progress() as progress, partial.open("wb") as f:
            task = progress.add_task(f"downloading {model_id[:8]}", total=total)
            for chunk in response.iter_bytes():
                digest.update(chunk)
                f.write(chunk)
                progress.update(task, advance=len(chunk))
        if expected and digest.hexdigest() != expected:
            partial.unlink()
            err.print(f"[red]the download's SHA-256 is not the model's ({expected})[/red]")
            raise typer.Exit(1)
        partial.replace(out)
    typer.echo(str(out))
