"""The platform's inference adapter, built on first use by the factory ``bootstrap.py``
chose (llama.cpp in process, or the GPU worker over HTTP): nothing loads at start-up."""

from __future__ import annotations

import threading
from collections.abc import Callable

from hartonomous.inference.model_files import ModelFiles
from hartonomous.ports import Inference


class InferenceProvider:
    def __init__(self, files: ModelFiles, build: Callable[[], Inference]) -> None:
        self.files = files
        self._build = build
        self._built: Inference | None = None
        self._lock = threading.Lock()

    def get(self) -> Inference:
        with self._lock:
            if self._built is None:
                self._built = self._build()
            return self._built
