"""What every blob writer shares: hashing and counting while bytes pass through."""

from __future__ import annotations

import hashlib

from hartonomous.domain.atoms import SHA256_HEX

READ_CHUNK = 1024 * 1024


class Digest:
    """Running SHA-256 and byte count of a stream."""

    __slots__ = ("_hash", "size")

    def __init__(self) -> None:
        self._hash = hashlib.sha256()
        self.size = 0

    def update(self, data: bytes | bytearray | memoryview) -> None:
        self._hash.update(data)
        self.size += len(data)

    def hexdigest(self) -> str:
        return self._hash.hexdigest()


def check_sha256(sha256: str) -> str:
    """Keys become paths and blob names: refuse anything that is not 64 lower-case hex digits."""
    if not SHA256_HEX.match(sha256):
        raise ValueError(f"not a sha256 hex digest: {sha256!r}")
    return sha256


def object_name(sha256: str) -> str:
    """Fan out by the first two bytes so no folder or listing grows huge."""
    check_sha256(sha256)
    return f"{sha256[:2]}/{sha256[2:4]}/{sha256}"
