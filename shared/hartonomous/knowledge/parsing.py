"""Documents to plain text, by media type (and file extension for source code).

Each parser is strict: bytes that are not what they claim fail with ``UnparseableDocument``
and a reason a person can act on, so an ingestion fails clearly rather than indexing junk.
"""

from __future__ import annotations

import io
import json
from html.parser import HTMLParser
from pathlib import PurePosixPath

from hartonomous.errors import UnprocessableContent

CODE_EXTENSIONS = {
    ".py", ".js", ".ts", ".tsx", ".jsx", ".java", ".c", ".h", ".cc", ".cpp", ".hpp", ".cs",
    ".go", ".rs", ".rb", ".php", ".swift", ".kt", ".scala", ".sql", ".sh", ".bash", ".ps1",
    ".r", ".lua", ".pl", ".yaml", ".yml", ".toml", ".ini", ".cfg", ".bicep", ".tf",
}  # fmt: skip
TEXT_TYPES = {"text/plain", "text/markdown", "text/x-markdown", "text/csv", "text/x-rst"}


class UnparseableDocument(UnprocessableContent):
    slug = "unparseable-document"


def _decode(data: bytes, what: str) -> str:
    if b"\x00" in data[:8192]:
        raise UnparseableDocument(f"the {what} holds NUL bytes: it is binary, not text")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise UnparseableDocument(
            f"the {what} is not valid UTF-8 (byte {exc.start}); send UTF-8 text"
        ) from exc


class _TextOfHtml(HTMLParser):
    BLOCKS = {"p", "div", "br", "li", "tr", "h1", "h2", "h3", "h4", "h5", "h6", "pre", "section",
              "article", "header", "footer", "blockquote", "table", "ul", "ol"}  # fmt: skip
    SKIP = {"script", "style", "noscript", "template", "svg"}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._skipping = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in self.SKIP:
            self._skipping += 1
        elif tag in self.BLOCKS:
            self.parts.append("\n\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in self.SKIP and self._skipping:
            self._skipping -= 1
        elif tag in self.BLOCKS:
            self.parts.append("\n\n")

    def handle_data(self, data: str) -> None:
        if not self._skipping:
            self.parts.append(data)


def _html(data: bytes) -> str:
    parser = _TextOfHtml()
    parser.feed(_decode(data, "HTML document"))
    parser.close()
    lines = (" ".join(line.split()) for line in "".join(parser.parts).split("\n"))
    text = "\n".join(lines)
    while "\n\n\n" in text:
        text = text.replace("\n\n\n", "\n\n")
    return text.strip()


def _json(data: bytes) -> str:
    try:
        value = json.loads(_decode(data, "JSON document"))
    except json.JSONDecodeError as exc:
        raise UnparseableDocument(f"the JSON document is invalid: {exc}") from exc
    return json.dumps(value, indent=2, ensure_ascii=False)


def _pdf(data: bytes) -> str:
    from pypdf import PdfReader
    from pypdf.errors import PdfReadError

    try:
        reader = PdfReader(io.BytesIO(data))
        if reader.is_encrypted:
            raise UnparseableDocument("the PDF is encrypted; send it without a password")
        pages = [page.extract_text() or "" for page in reader.pages]
    except PdfReadError as exc:
        raise UnparseableDocument(f"the PDF cannot be read: {exc}") from exc
    text = "\n\n".join(p.strip() for p in pages if p.strip())
    if not text:
        raise UnparseableDocument("the PDF has no extractable text (scanned images need OCR)")
    return text


def _kind(media_type: str, suffix: str) -> str | None:
    if media_type == "application/pdf" or suffix == ".pdf":
        return "pdf"
    if media_type in ("text/html", "application/xhtml+xml") or suffix in (".html", ".htm"):
        return "html"
    if media_type == "application/json" or media_type.endswith("+json") or suffix == ".json":
        return "json"
    if (
        media_type in TEXT_TYPES
        or media_type.startswith("text/")
        or suffix in CODE_EXTENSIONS
        or suffix in (".md", ".txt", ".rst")
    ):
        return "text"
    return None


def is_supported(media_type: str, filename: str | None = None) -> bool:
    suffix = PurePosixPath(filename).suffix.lower() if filename else ""
    return _kind(media_type, suffix) is not None


def extract_text(data: bytes, media_type: str, filename: str | None = None) -> str:
    """The document's text; ``UnparseableDocument`` (422) when it has none we can read."""
    suffix = PurePosixPath(filename).suffix.lower() if filename else ""
    kind = _kind(media_type, suffix)
    if kind == "pdf":
        text = _pdf(data)
    elif kind == "html":
        text = _html(data)
    elif kind == "json":
        text = _json(data)
    elif kind == "text":
        text = _decode(data, "document")
    else:
        raise UnparseableDocument(
            f"documents of type {media_type!r} cannot be ingested; send text, Markdown, HTML, "
            "JSON, PDF or source code"
        )
    if not text.strip():
        raise UnparseableDocument("the document has no text")
    return text
