"""A labelled corpus of text others wrote: the standard library's docstrings, one Markdown
document per module (a section per public member), labelled by the module's package family.

Used by the concept tests and by ``bench/concepts.py`` (quality figures). The families are
packages whose modules share a subject, so a chunk's family is its topic.
"""

from __future__ import annotations

import importlib
import inspect

FAMILIES: dict[str, list[str]] = {
    "email": ["email.message", "email.parser", "email.utils", "email.header", "email.policy",
              "email.headerregistry", "email.charset", "email.generator", "email.feedparser",
              "email.contentmanager", "email.mime.multipart", "email.mime.text"],
    "xml": ["xml.dom.minidom", "xml.etree.ElementTree", "xml.sax", "xml.sax.saxutils",
            "xml.sax.handler", "xml.dom.pulldom", "xml.sax.xmlreader", "xml.dom.expatbuilder"],
    "asyncio": ["asyncio.events", "asyncio.tasks", "asyncio.streams", "asyncio.queues",
                "asyncio.locks", "asyncio.subprocess", "asyncio.futures", "asyncio.base_events",
                "asyncio.transports", "asyncio.protocols", "asyncio.runners"],
    "unittest": ["unittest.case", "unittest.mock", "unittest.loader", "unittest.runner",
                 "unittest.result", "unittest.suite", "unittest.async_case"],
    "http": ["http.client", "http.server", "http.cookies", "http.cookiejar", "urllib.request",
             "urllib.parse", "urllib.robotparser"],
    "logging": ["logging", "logging.handlers", "logging.config"],
    "importlib": ["importlib", "importlib.util", "importlib.abc", "importlib.machinery",
                  "importlib.metadata", "importlib.resources", "pkgutil", "zipimport"],
    "archives": ["tarfile", "zipfile", "gzip", "bz2", "lzma", "zlib", "shutil"],
}  # fmt: skip


def module_document(name: str) -> str | None:
    """The module's docstring and its public members' docstrings as Markdown."""
    module = importlib.import_module(name)
    sections = []
    if module.__doc__ and len(module.__doc__) > 40:
        sections.append(inspect.cleandoc(module.__doc__))
    for member_name in sorted(dir(module)):
        if member_name.startswith("_"):
            continue
        member = getattr(module, member_name)
        if not callable(member) or getattr(member, "__module__", "") != module.__name__:
            continue  # what the module imported belongs to another family
        doc = inspect.getdoc(member)
        if doc and len(doc) > 40:
            sections.append(f"## {name}.{member_name}\n\n{doc}")
    return f"# {name}\n\n" + "\n\n".join(sections) if sections else None


def family_documents(families: list[str] | None = None) -> list[tuple[str, str, str]]:
    """(family, module, markdown) for every module of the families that has any text."""
    out = []
    for family in families or list(FAMILIES):
        for module in FAMILIES[family]:
            text = module_document(module)
            if text is not None:
                out.append((family, module, text))
    return out
