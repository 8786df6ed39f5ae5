"""Token-aware chunking with overlap and content-defined boundaries.

Text is cut into segments (paragraphs; sentences, then token windows, when a paragraph is
too long). Chunks are runs of whole segments, contiguous spans of the document, so each has
exact character offsets. Where a chunk ends is decided by the content of its last segment
(a stable hash) once the chunk holds ``min_tokens``, or by ``max_tokens``: an edit moves at
most the boundaries around it, so re-ingesting an edited document reproduces the other
chunks byte for byte and reuses their atoms and embeddings. Each chunk after the first also
starts with the previous chunk's last segment when that is short (the overlap).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

_PARAGRAPH = re.compile(r"\n[ \t]*\n\s*")
_SENTENCE = re.compile(r"(?<=[.!?])\s+(?=\S)")


class Tokenizer(Protocol):
    def count(self, texts: Sequence[str]) -> list[int]: ...

    def windows(self, text: str, max_tokens: int) -> list[tuple[int, int]]:
        """Character spans of consecutive pieces of at most ``max_tokens`` tokens."""
        ...


@dataclass(frozen=True)
class Chunk:
    ordinal: int
    start: int  # character offsets into the document text, [start, end)
    end: int
    text: str
    tokens: int


@dataclass(frozen=True)
class ChunkingPolicy:
    max_tokens: int = 256  # all-MiniLM-L6-v2's window
    min_tokens: int = 96
    overlap_tokens: int = 48
    boundary_one_in: int = 3  # a segment ends a chunk about one time in three

    def __post_init__(self) -> None:
        if not 0 < self.min_tokens <= self.max_tokens or self.overlap_tokens >= self.min_tokens:
            raise ValueError("need 0 < overlap_tokens < min_tokens <= max_tokens")


def _spans(pattern: re.Pattern[str], text: str, start: int, end: int) -> list[tuple[int, int]]:
    out, pos = [], start
    for m in pattern.finditer(text, start, end):
        if m.start() > pos:
            out.append((pos, m.start()))
        pos = m.end()
    if pos < end:
        out.append((pos, end))
    return [(a, b) for a, b in out if text[a:b].strip()]


def _segments(text: str, tok: Tokenizer, max_tokens: int) -> list[tuple[int, int, int]]:
    """(start, end, tokens) of segments that each fit in ``max_tokens``."""
    out: list[tuple[int, int, int]] = []
    paragraphs = _spans(_PARAGRAPH, text, 0, len(text))
    counts = tok.count([text[a:b] for a, b in paragraphs])
    for (a, b), n in zip(paragraphs, counts, strict=True):
        if n <= max_tokens:
            out.append((a, b, n))
            continue
        sentences = _spans(_SENTENCE, text, a, b)
        for (sa, sb), sn in zip(
            sentences, tok.count([text[x:y] for x, y in sentences]), strict=True
        ):
            if sn <= max_tokens:
                out.append((sa, sb, sn))
                continue
            windows = [(sa + x, sa + y) for x, y in tok.windows(text[sa:sb], max_tokens)]
            wcounts = tok.count([text[x:y] for x, y in windows])
            out.extend((x, y, c) for (x, y), c in zip(windows, wcounts, strict=True))
    return out


def _ends_chunk(segment: str, one_in: int) -> bool:
    digest = hashlib.blake2b(segment.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big") % one_in == 0


def chunk_text(text: str, tok: Tokenizer, policy: ChunkingPolicy | None = None) -> list[Chunk]:
    p = policy or ChunkingPolicy()
    segments = _segments(text, tok, p.max_tokens)
    groups: list[list[tuple[int, int, int]]] = []
    current: list[tuple[int, int, int]] = []
    tokens = 0
    for seg in segments:
        if current and tokens + seg[2] > p.max_tokens:
            groups.append(current)
            current, tokens = [], 0
        current.append(seg)
        tokens += seg[2]
        if tokens >= p.min_tokens and _ends_chunk(text[seg[0] : seg[1]], p.boundary_one_in):
            groups.append(current)
            current, tokens = [], 0
    if current:
        groups.append(current)

    chunks: list[Chunk] = []
    for i, group in enumerate(groups):
        first = group[0]
        start, count = first[0], sum(s[2] for s in group)
        if i > 0:
            previous = groups[i - 1][-1]
            if previous[2] <= p.overlap_tokens and count + previous[2] <= p.max_tokens:
                start, count = previous[0], count + previous[2]
        end = group[-1][1]
        chunks.append(Chunk(len(chunks), start, end, text[start:end], count))
    return chunks
