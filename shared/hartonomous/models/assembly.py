"""Bytes of a model from its parts, and the header of a slice.

A model's file is its parts in order: the header atom, tensor atoms, and runs of zero
padding. Reading streams each part's blob range; nothing is held whole in memory.
"""

from __future__ import annotations

import io
import struct
from collections.abc import Iterator
from dataclasses import dataclass

from gguf import GGUFValueType

from hartonomous.errors import InvalidInput
from hartonomous.models.gguf_layout import _SCALARS, BLOCK, GGUFLayout, TensorInfo
from hartonomous.models.store import BYTES, HEADER, TENSOR, ZEROS, ModelPart
from hartonomous.ports import BlobStore

ZERO_CHUNK = bytes(1024 * 1024)


def read_parts(
    blobs: BlobStore, parts: list[ModelPart], start: int = 0, end: int | None = None
) -> Iterator[bytes]:
    """Bytes ``[start, end)`` of the file these parts make up, in bounded pieces."""
    total = parts[-1].file_offset + parts[-1].length if parts else 0
    end = total if end is None else min(end, total)
    for part in parts:
        lo = max(start, part.file_offset)
        hi = min(end, part.file_offset + part.length)
        if lo >= hi:
            continue
        if part.kind == ZEROS:
            remaining = hi - lo
            while remaining:
                n = min(remaining, len(ZERO_CHUNK))
                yield ZERO_CHUNK[:n]
                remaining -= n
        else:
            assert part.sha256 is not None
            yield from blobs.read(part.sha256, lo - part.file_offset, hi - part.file_offset)


class RangeStream(io.RawIOBase):
    """A seekable read-only file over a blob, for parsing headers through a buffer."""

    def __init__(self, blobs: BlobStore, sha256: str, size: int) -> None:
        self._blobs, self._sha, self._size, self._pos = blobs, sha256, size, 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._size}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        end = min(self._size, self._pos + len(buffer))
        n = 0
        if end > self._pos:
            for piece in self._blobs.read(self._sha, self._pos, end):
                buffer[n : n + len(piece)] = piece
                n += len(piece)
        self._pos += n
        return n


def open_blob(blobs: BlobStore, sha256: str, size: int) -> io.BufferedReader:
    return io.BufferedReader(RangeStream(blobs, sha256, size), buffer_size=1024 * 1024)


# -- slices ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SlicePlan:
    header: bytes
    parts: list[ModelPart]  # the header part's sha256 and atom are filled in by the caller
    file_size: int
    block_count: int


def _pack_string(s: str) -> bytes:
    raw = s.encode("utf-8")
    return struct.pack("<Q", len(raw)) + raw


def _align(n: int, alignment: int) -> int:
    return n + (-n) % alignment


def plan_slice(
    layout: GGUFLayout,
    header: bytes,
    parent_parts: list[ModelPart],
    layers: list[int],
) -> SlicePlan:
    """The header and parts of a model made of ``layers`` of this one, renumbered 0..n-1.

    ``header`` is the parent's header bytes (metadata records are copied verbatim, except
    the block count and per-block arrays); tensors outside blocks are kept; tensor bytes
    are the parent's atoms, so a slice stores only its new header.
    """
    arch = layout.architecture
    blocks = layout.arch_value("block_count")
    if arch is None or not isinstance(blocks, int):
        raise InvalidInput("this model has no {architecture}.block_count: it has no blocks")
    if not layers:
        raise InvalidInput("layers must name at least one block")
    if len(set(layers)) != len(layers):
        raise InvalidInput("layers must not repeat a block")
    bad = [n for n in layers if not 0 <= n < blocks]
    if bad:
        raise InvalidInput(f"blocks {bad} do not exist: this model has blocks 0..{blocks - 1}")
    renumber = {old: new for new, old in enumerate(layers)}
    count_key = f"{arch}.block_count"

    records = []
    for key, entry in layout.metadata.items():
        raw = header[entry.start : entry.end]
        if key == count_key:
            fmt = _SCALARS[entry.value_type]
            raw = (
                _pack_string(key)
                + struct.pack("<I", entry.value_type)
                + struct.pack(fmt, len(layers))
            )
        elif entry.value_type == GGUFValueType.ARRAY and key.startswith(f"{arch}."):
            # e.g. heads per block, where an architecture varies them
            raw = _per_block_array(key, raw, blocks, layers) or raw
        records.append(raw)

    tensors: list[tuple[TensorInfo, str]] = []
    for t in sorted(layout.tensors, key=lambda t: t.ordinal):
        m = BLOCK.match(t.name)
        if m is None:
            tensors.append((t, t.name))
        elif int(m.group(1)) in renumber:
            tensors.append((t, f"blk.{renumber[int(m.group(1))]}.{t.name[m.end() :]}"))
    # Blocks in their new order; the other tensors keep their place around them.
    tensors.sort(key=lambda p: (_order_key(p[1]), p[0].ordinal))

    infos = bytearray()
    offset = 0
    placed: list[tuple[TensorInfo, str, int]] = []
    for t, name in tensors:
        offset = _align(offset, layout.alignment)
        infos += _pack_string(name) + struct.pack("<I", len(t.shape))
        infos += struct.pack(f"<{len(t.shape)}Q", *t.shape)
        infos += struct.pack("<IQ", int(t.ggml_type), offset)
        placed.append((t, name, offset))
        offset += t.n_bytes
    head = struct.pack("<IIQQ", 0x46554747, layout.version, len(tensors), len(layout.metadata))
    body = head + b"".join(records) + bytes(infos)
    data_offset = _align(len(body), layout.alignment)
    new_header = body + bytes(data_offset - len(body))

    by_index = {p.tensor_index: p for p in parent_parts if p.kind == TENSOR}
    parts = [ModelPart(0, HEADER, 0, data_offset)]
    pos = data_offset
    for index, (t, name, rel) in enumerate(placed):
        start = data_offset + rel
        if start > pos:
            parts.append(ModelPart(len(parts), ZEROS, pos, start - pos))
        src = by_index[t.ordinal]
        m = BLOCK.match(name)
        parts.append(
            ModelPart(
                ordinal=len(parts),
                kind=TENSOR,
                file_offset=start,
                length=t.n_bytes,
                atom_id=src.atom_id,
                sha256=src.sha256,
                tensor_name=name,
                tensor_index=index,
                ggml_type=t.ggml_type.name,
                shape=list(t.shape),
                layer=int(m.group(1)) if m else None,
            )
        )
        pos = start + t.n_bytes
    return SlicePlan(new_header, parts, pos, len(layers))


def _order_key(name: str) -> tuple[int, int]:
    m = BLOCK.match(name)
    return (1, int(m.group(1))) if m else (0, 0)


def _per_block_array(key: str, raw: bytes, blocks: int, layers: list[int]) -> bytes | None:
    """A scalar array with one item per block (some architectures vary heads per block)."""
    key_len = 8 + len(key.encode("utf-8"))
    itype, count = struct.unpack_from("<IQ", raw, key_len + 4)
    try:
        fmt = _SCALARS[GGUFValueType(itype)]
    except (ValueError, KeyError):
        return None
    if count != blocks:
        return None
    size = struct.calcsize(fmt)
    start = key_len + 4 + 12
    items = [raw[start + i * size : start + (i + 1) * size] for i in range(count)]
    return (
        raw[: key_len + 4]
        + struct.pack("<IQ", itype, len(layers))
        + b"".join(items[n] for n in layers)
    )


__all__ = ["BYTES", "RangeStream", "SlicePlan", "open_blob", "plan_slice", "read_parts"]
