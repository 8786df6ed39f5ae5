"""Streaming request bodies into the blob store, raw or ``multipart/form-data``.

The body never sits whole in memory or on a spool file: chunks are gathered into 1 MiB
batches and handed to a worker thread that hashes and writes them (blocking I/O stays off
the event loop). Multipart is parsed incrementally with python-multipart's push parser,
so the ``file`` part streams just like a raw body.
"""

from __future__ import annotations

import mimetypes
from dataclasses import dataclass, field
from typing import Any

from fastapi import Request
from fastapi.concurrency import run_in_threadpool
from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header

from hartonomous.domain.atoms import DEFAULT_MEDIA_TYPE, normalize_media_type
from hartonomous.domain.metadata import MAX_METADATA_BYTES, parse_metadata
from hartonomous.errors import InvalidInput, PayloadTooLarge
from hartonomous.services.atoms import Upload

BATCH = 1024 * 1024
FILE_FIELD = "file"
METADATA_FIELD = "metadata"
MAX_PART_HEADER_BYTES = 16 * 1024  # all the headers of one part together


@dataclass
class ReceivedBody:
    media_type: str | None
    metadata: dict[str, Any]


def check_declared_length(request: Request, limit: int) -> None:
    """Refuse early when Content-Length already says the body is too large."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(
            f"the body of {declared} bytes exceeds the limit of {limit} bytes", limit_bytes=limit
        )


def media_type_of(raw: str | None) -> str:
    try:
        return normalize_media_type(raw)
    except ValueError as exc:
        raise InvalidInput(str(exc)) from exc


async def _pump(request: Request, sink: Any) -> None:
    batch = bytearray()
    async for chunk in request.stream():
        batch += chunk
        if len(batch) >= BATCH:
            await run_in_threadpool(sink, batch)
            batch = bytearray()
    if batch:
        await run_in_threadpool(sink, batch)


async def receive_raw(request: Request, upload: Upload) -> ReceivedBody:
    media_type = media_type_of(request.headers.get("content-type"))
    metadata = parse_metadata(request.headers.get("x-atom-metadata"))
    await _pump(request, upload.write)
    return ReceivedBody(media_type=media_type, metadata=metadata)


@dataclass
class _MultipartState:
    upload: Upload
    headers: dict[bytes, bytes] = field(default_factory=dict)
    header_field: bytearray = field(default_factory=bytearray)
    header_value: bytearray = field(default_factory=bytearray)
    part_name: str | None = None
    part_filename: str | None = None
    part_type: str | None = None
    files_seen: int = 0
    header_bytes: int = 0
    metadata_raw: bytearray | None = None
    file_type: str | None = None
    filename: str | None = None
    done: bool = False

    def on_part_begin(self) -> None:
        self.headers, self.part_name, self.part_filename, self.part_type = {}, None, None, None
        self.header_bytes = 0

    def _count_header(self, size: int) -> None:
        self.header_bytes += size
        if self.header_bytes > MAX_PART_HEADER_BYTES:
            raise InvalidInput(f"a multipart part's headers exceed {MAX_PART_HEADER_BYTES} bytes")

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._count_header(end - start)
        self.header_field += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._count_header(end - start)
        self.header_value += data[start:end]

    def on_header_end(self) -> None:
        self.headers[bytes(self.header_field).lower()] = bytes(self.header_value)
        self.header_field, self.header_value = bytearray(), bytearray()

    def on_headers_finished(self) -> None:
        _, options = parse_options_header(self.headers.get(b"content-disposition", b""))
        name = options.get(b"name")
        filename = options.get(b"filename")
        self.part_name = name.decode("utf-8", "replace") if name is not None else None
        self.part_filename = filename.decode("utf-8", "replace") if filename is not None else None
        ctype = self.headers.get(b"content-type")
        self.part_type = ctype.decode("latin-1") if ctype else None
        if self.part_name == FILE_FIELD:
            self.files_seen += 1
            if self.files_seen > 1:
                raise InvalidInput("send exactly one 'file' part per request")
            self.filename = self.part_filename
            self.file_type = self.part_type
        elif self.part_name == METADATA_FIELD:
            self.metadata_raw = bytearray()
        else:
            raise InvalidInput(
                f"unexpected form field {self.part_name!r}; expected 'file' and optional 'metadata'"
            )

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        if self.part_name == FILE_FIELD:
            self.upload.write(memoryview(data)[start:end])
        elif self.metadata_raw is not None:
            self.metadata_raw += data[start:end]
            if len(self.metadata_raw) > MAX_METADATA_BYTES:
                raise InvalidInput(f"metadata is larger than {MAX_METADATA_BYTES} bytes")

    def on_end(self) -> None:
        self.done = True


async def receive_multipart(request: Request, upload: Upload, content_type: str) -> ReceivedBody:
    _, options = parse_options_header(content_type)
    boundary = options.get(b"boundary")
    if not boundary:
        raise InvalidInput("multipart/form-data needs a boundary parameter")
    state = _MultipartState(upload)
    callbacks: Any = {
        name: getattr(state, name)
        for name in (
            "on_part_begin",
            "on_header_field",
            "on_header_value",
            "on_header_end",
            "on_headers_finished",
            "on_part_data",
            "on_end",
        )
    }
    parser = MultipartParser(boundary, callbacks)
    try:
        await _pump(request, parser.write)
        await run_in_threadpool(parser.finalize)
    except FormParserError as exc:
        raise InvalidInput(f"the multipart body is malformed: {exc}") from exc
    if not state.done:
        raise InvalidInput("the multipart body ended before its closing boundary")
    if state.files_seen == 0:
        raise InvalidInput("multipart uploads need a 'file' part")
    media = state.file_type
    if (media is None or media_type_of(media) == DEFAULT_MEDIA_TYPE) and state.filename:
        media = mimetypes.guess_type(state.filename)[0] or media
    metadata = parse_metadata(bytes(state.metadata_raw) if state.metadata_raw else None)
    if state.filename and "filename" not in metadata:
        metadata = {**metadata, "filename": state.filename}
    return ReceivedBody(media_type=media_type_of(media), metadata=metadata)


async def receive(request: Request, upload: Upload) -> ReceivedBody:
    """Stream the body into ``upload``; abort it (nothing kept) on any error. An empty body
    (or file part) is refused: it is almost always a client that forgot to send the file."""
    content_type = request.headers.get("content-type", "")
    try:
        if content_type.lower().startswith("multipart/form-data"):
            received = await receive_multipart(request, upload, content_type)
        else:
            received = await receive_raw(request, upload)
        if upload.received == 0:
            raise InvalidInput("the body is empty: send the bytes to store (at least one)")
        return received
    except BaseException:
        upload.abort()
        raise
