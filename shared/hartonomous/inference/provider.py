"""The platform's inference adapter, built on first use: llama.cpp in process by default, the
GPU worker over HTTP when ``inference_url`` is set (the one place that choice is made)."""

from __future__ import annotations

import threading

from hartonomous.inference.llama_engine import EngineOptions, LlamaEngine
from hartonomous.inference.model_files import ModelFiles
from hartonomous.inference.types import Inference
from hartonomous.settings import Settings


class InferenceProvider:
    def __init__(self, settings: Settings, files: ModelFiles, built: Inference | None = None):
        self._settings = settings
        self.files = files
        self._built = built
        self._lock = threading.Lock()

    def get(self) -> Inference:
        with self._lock:
            if self._built is None:
                s = self._settings
                if s.inference_url:
                    from hartonomous.inference.openai_http import WorkerInference

                    key = s.worker_key.get_secret_value() if s.worker_key else None
                    self._built = WorkerInference(s.inference_url, key)
                else:
                    self._built = LlamaEngine(
                        self.files,
                        EngineOptions(
                            n_ctx=s.inference_context_tokens,
                            n_threads=s.inference_threads,
                            n_gpu_layers=s.inference_gpu_layers,
                        ),
                    )
            return self._built
