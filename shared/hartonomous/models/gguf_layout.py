"""The layout of a GGUF file: header, metadata and tensor table, read from a stream.

``gguf.GGUFReader`` memory-maps the file and builds two NumPy arrays for every element of
every metadata array: Gemma 3's 262k-token vocabulary took it 33 s and 722 MB of RSS
(measured here). This reader walks the same format (constants and type sizes from the
``gguf`` package) through a buffered stream: scalars and short arrays are decoded, long
arrays are skipped by arithmetic (or by length prefixes, for strings) and kept as their
byte span. Memory is bounded by the buffer, whatever the vocabulary or the model's size.

Everything a hostile or damaged file could lie about is checked against the file's real
size before it is trusted; any lie is an ``InvalidModel`` (422) naming what is wrong.
"""

from __future__ import annotations

import itertools
import re
import struct
from dataclasses import dataclass
from typing import Any, BinaryIO

from gguf import GGML_QUANT_SIZES, GGUF_MAGIC, GGMLQuantizationType, GGUFValueType

from hartonomous.errors import UnprocessableContent

SUPPORTED_VERSIONS = (2, 3)
MAX_TENSORS = 65_536
MAX_NAME_BYTES = 255  # tensor names (llama.cpp's own limit is 64)
MAX_ALIGNMENT = 65_536
MAX_DECODED_STRING = 65_536  # longer string values are skipped (chat templates are ~10 KB)
MAX_KV = 100_000
MAX_KEY_BYTES = 65_535
MAX_DIMS = 4  # GGML_MAX_DIMS
MAX_NESTING = 4
DECODED_ARRAY_MAX = 64  # longer arrays keep only their type, count and byte span
DEFAULT_ALIGNMENT = 32
BLOCK = re.compile(r"^blk\.(0|[1-9][0-9]{0,8})\.", re.ASCII)

_U64 = struct.Struct("<Q")
_SCALARS: dict[GGUFValueType, str] = {
    GGUFValueType.UINT8: "<B",
    GGUFValueType.INT8: "<b",
    GGUFValueType.UINT16: "<H",
    GGUFValueType.INT16: "<h",
    GGUFValueType.UINT32: "<I",
    GGUFValueType.INT32: "<i",
    GGUFValueType.FLOAT32: "<f",
    GGUFValueType.UINT64: "<Q",
    GGUFValueType.INT64: "<q",
    GGUFValueType.FLOAT64: "<d",
    GGUFValueType.BOOL: "<?",
}


class InvalidModel(UnprocessableContent):
    """The bytes are not a GGUF model this platform can take apart."""


@dataclass(frozen=True)
class ArraySummary:
    """A metadata array too long to decode: what it holds and where its bytes are."""

    item_type: str
    count: int


@dataclass(frozen=True)
class LongString:
    """A string value too long to decode (only its length is kept)."""

    length: int


@dataclass(frozen=True)
class MetadataEntry:
    key: str
    value_type: GGUFValueType
    value: Any  # decoded value, or ArraySummary for long arrays
    start: int  # byte span of the whole key/value record in the header
    end: int


@dataclass(frozen=True)
class TensorInfo:
    ordinal: int  # position in the tensor table
    name: str
    ggml_type: GGMLQuantizationType
    shape: tuple[int, ...]  # GGUF order: fastest-varying dimension first
    n_elements: int
    n_bytes: int
    offset: int  # absolute offset of the data in the file

    @property
    def layer(self) -> int | None:
        """The transformer block (``blk.N.``) the tensor belongs to, if any."""
        m = BLOCK.match(self.name)
        return int(m.group(1)) if m else None


@dataclass(frozen=True)
class GGUFLayout:
    version: int
    file_size: int
    alignment: int
    data_offset: int  # where the tensor data section starts (end of the padded header)
    metadata: dict[str, MetadataEntry]
    tensors: list[TensorInfo]
    kv_end: int = 0  # end of the last metadata record (start of the tensor table)

    def value(self, key: str, default: Any = None) -> Any:
        entry = self.metadata.get(key)
        return default if entry is None else entry.value

    @property
    def architecture(self) -> str | None:
        arch = self.value("general.architecture")
        return arch if isinstance(arch, str) else None

    def arch_value(self, suffix: str) -> Any:
        return self.value(f"{self.architecture}.{suffix}") if self.architecture else None

    def array_count(self, key: str) -> int | None:
        value = self.value(key)
        if isinstance(value, ArraySummary):
            return value.count
        return len(value) if isinstance(value, list) else None

    def segments(self) -> list[tuple[int, int, TensorInfo | None]]:
        """``(start, end, tensor)`` covering the whole file in order; gaps have no tensor."""
        out: list[tuple[int, int, TensorInfo | None]] = [(0, self.data_offset, None)]
        pos = self.data_offset
        for t in sorted(self.tensors, key=lambda t: t.offset):
            if t.offset > pos:
                out.append((pos, t.offset, None))
            out.append((t.offset, t.offset + t.n_bytes, t))
            pos = t.offset + t.n_bytes
        if pos < self.file_size:
            out.append((pos, self.file_size, None))
        return out


class _Reader:
    """Little-endian reads that fail as ``InvalidModel`` when the file ends early."""

    def __init__(self, stream: BinaryIO, size: int) -> None:
        self.stream, self.size, self.pos = stream, size, 0

    def need(self, n: int, what: str) -> None:
        if n < 0 or self.pos + n > self.size:
            raise InvalidModel(
                f"the file is truncated or corrupt: {what} at byte {self.pos} needs {n} bytes "
                f"but the file has {self.size - self.pos} left"
            )

    def bytes(self, n: int, what: str) -> bytes:
        self.need(n, what)
        data = self.stream.read(n)
        if len(data) != n:
            raise InvalidModel(f"the file ended while reading {what} at byte {self.pos}")
        self.pos += n
        return data

    def skip(self, n: int, what: str) -> None:
        self.need(n, what)
        self.stream.seek(n, 1)
        self.pos += n

    def unpack(self, fmt: str, what: str) -> Any:
        return struct.unpack(fmt, self.bytes(struct.calcsize(fmt), what))[0]

    def skip_strings(self, count: int, what: str) -> None:
        """Walk ``count`` length-prefixed strings: the hot loop of a vocabulary, kept tight."""
        read, seek, unpack = self.stream.read, self.stream.seek, _U64.unpack
        pos, size = self.pos, self.size
        for _ in range(count):
            raw = read(8)
            if len(raw) != 8:
                raise InvalidModel(f"the file ended inside {what} at byte {pos}")
            (n,) = unpack(raw)
            pos += 8 + n
            if pos > size:
                raise InvalidModel(
                    f"the file is truncated or corrupt: a string of {what} claims {n} bytes "
                    f"but the file has {size - pos + n} left"
                )
            seek(n, 1)
        self.pos = pos

    def u32(self, what: str) -> int:
        return int(self.unpack("<I", what))

    def u64(self, what: str) -> int:
        return int(self.unpack("<Q", what))

    def string(self, what: str, limit: int | None = None) -> str:
        n = self.u64(f"the length of {what}")
        if limit is not None and n > limit:
            raise InvalidModel(f"{what} claims {n} bytes; at most {limit} are allowed")
        raw = self.bytes(n, what)
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InvalidModel(f"{what} is not valid UTF-8") from exc


def _value_type(raw: int, what: str) -> GGUFValueType:
    try:
        return GGUFValueType(raw)
    except ValueError:
        raise InvalidModel(f"{what} has an unknown value type {raw}") from None


def _read_value(
    r: _Reader, vtype: GGUFValueType, what: str, depth: int = 0, decode: bool = True
) -> Any:
    """The value (decoded when small), or a summary; either way the stream moves past it."""
    if vtype in _SCALARS:
        fmt = _SCALARS[vtype]
        if decode:
            return r.unpack(fmt, what)
        r.skip(struct.calcsize(fmt), what)
        return None
    if vtype == GGUFValueType.STRING:
        n = r.u64(f"the length of {what}")
        if decode and n <= MAX_DECODED_STRING:
            try:
                return r.bytes(n, what).decode("utf-8")
            except UnicodeDecodeError as exc:
                raise InvalidModel(f"{what} is not valid UTF-8") from exc
        r.skip(n, what)
        return LongString(n)
    if vtype != GGUFValueType.ARRAY:
        raise InvalidModel(f"{what} has an unhandled value type {vtype.name}")
    if depth >= MAX_NESTING:
        raise InvalidModel(f"{what} nests arrays more than {MAX_NESTING} deep")
    itype = _value_type(r.u32(f"the item type of {what}"), what)
    count = r.u64(f"the length of {what}")
    # Only short top-level arrays of scalars or strings are decoded; the rest is skipped.
    small = decode and depth == 0 and count <= DECODED_ARRAY_MAX and itype != GGUFValueType.ARRAY
    if itype in _SCALARS:
        itemsize = struct.calcsize(_SCALARS[itype])
        # A declared length past the end of the file is caught before anything is read.
        r.need(count * itemsize, f"{what} ({count} items of {itype.name})")
        if small:
            fmt = "<" + _SCALARS[itype][1] * count
            return list(struct.unpack(fmt, r.bytes(count * itemsize, what)))
        r.skip(count * itemsize, what)
        return ArraySummary(itype.name, count)
    # Strings and nested arrays: every item has at least an 8-byte length.
    r.need(count * 8, f"{what} ({count} items of {itype.name})")
    if small:
        return [_read_value(r, itype, f"{what}[{i}]", depth + 1) for i in range(count)]
    if itype == GGUFValueType.STRING:
        r.skip_strings(count, what)  # a vocabulary: 262k tokens in Gemma 3
    else:
        for _ in range(count):
            _read_value(r, itype, f"an item of {what}", depth + 1, decode=False)
    return ArraySummary(itype.name, count)


def read_layout(stream: BinaryIO, size: int) -> GGUFLayout:
    """Parse and check a GGUF file's header; ``stream`` is positioned at byte 0."""
    r = _Reader(stream, size)
    if size < 24:
        raise InvalidModel(f"{size} bytes is too short for a GGUF file (24 bytes of header)")
    magic = r.u32("the magic number")
    if magic != GGUF_MAGIC:
        raise InvalidModel(
            f"not a GGUF file: the magic number is {magic:#010x}, GGUF's is {GGUF_MAGIC:#010x}"
        )
    version = r.u32("the version")
    if version not in SUPPORTED_VERSIONS:
        raise InvalidModel(f"GGUF version {version} is not supported (versions 2 and 3 are)")
    n_tensors = r.u64("the tensor count")
    n_kv = r.u64("the metadata count")
    if n_tensors > MAX_TENSORS:
        raise InvalidModel(f"the header claims {n_tensors} tensors; at most {MAX_TENSORS}")
    if n_kv > MAX_KV:
        raise InvalidModel(f"the header claims {n_kv} metadata entries; at most {MAX_KV}")

    metadata: dict[str, MetadataEntry] = {}
    for i in range(n_kv):
        start = r.pos
        key = r.string(f"metadata key #{i}", MAX_KEY_BYTES)
        if key in metadata:
            raise InvalidModel(f"metadata key {key!r} appears twice")
        vtype = _value_type(r.u32(f"the type of {key!r}"), repr(key))
        value = _read_value(r, vtype, f"metadata {key!r}")
        metadata[key] = MetadataEntry(key, vtype, value, start, r.pos)
    kv_end = r.pos

    alignment = DEFAULT_ALIGNMENT
    if "general.alignment" in metadata:
        entry = metadata["general.alignment"]
        alignment = entry.value
        if (
            entry.value_type != GGUFValueType.UINT32
            or alignment <= 0
            or alignment & (alignment - 1)
        ):
            raise InvalidModel("general.alignment must be a power of two (uint32)")

    raw_tensors = []
    names: set[str] = set()
    for i in range(n_tensors):
        name = r.string(f"the name of tensor #{i}", MAX_NAME_BYTES)
        if name in names:
            raise InvalidModel(f"tensor {name!r} appears twice")
        names.add(name)
        n_dims = r.u32(f"the dimension count of {name!r}")
        if not 1 <= n_dims <= MAX_DIMS:
            raise InvalidModel(f"tensor {name!r} has {n_dims} dimensions (1 to {MAX_DIMS})")
        shape = tuple(r.u64(f"a dimension of {name!r}") for _ in range(n_dims))
        raw_type = r.u32(f"the type of {name!r}")
        offset = r.u64(f"the offset of {name!r}")
        raw_tensors.append((i, name, shape, raw_type, offset))
    data_offset = r.pos + (-r.pos) % alignment
    if data_offset > size:
        raise InvalidModel("the file is truncated: it ends inside the header's padding")

    tensors = []
    for i, name, shape, raw_type, offset in raw_tensors:
        try:
            ggml_type = GGMLQuantizationType(raw_type)
            block, type_size = GGML_QUANT_SIZES[ggml_type]
        except (ValueError, KeyError):
            raise InvalidModel(f"tensor {name!r} has an unknown ggml type {raw_type}") from None
        n_elements = 1
        for d in shape:
            if d == 0:
                raise InvalidModel(f"tensor {name!r} has a zero dimension: {list(shape)}")
            n_elements *= d
        if shape[0] % block:
            raise InvalidModel(
                f"tensor {name!r}: its first dimension {shape[0]} is not a multiple of "
                f"{ggml_type.name}'s block of {block}"
            )
        n_bytes = n_elements // block * type_size
        if offset % alignment:
            raise InvalidModel(f"tensor {name!r} is not aligned to {alignment} bytes")
        start = data_offset + offset
        if start + n_bytes > size:
            raise InvalidModel(
                f"tensor {name!r} points past the end of the file: bytes {start}..{start + n_bytes}"
                f" of a {size}-byte file"
            )
        tensors.append(TensorInfo(i, name, ggml_type, shape, n_elements, n_bytes, start))
    ordered = sorted(tensors, key=lambda t: t.offset)
    for a, b in itertools.pairwise(ordered):
        if a.offset + a.n_bytes > b.offset:
            raise InvalidModel(f"tensors {a.name!r} and {b.name!r} overlap")
    return GGUFLayout(version, size, alignment, data_offset, metadata, tensors, kv_end)
