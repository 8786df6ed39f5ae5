"""llama.cpp through llama-cpp-python: the engine of both the in-process adapter and the GPU
worker, so the two give the same text for the same request.

A ``Llama`` is not thread-safe: each loaded model has a lock and requests for it take turns
(llama.cpp already spreads one request over its threads). Loaded models are kept, least
recently used first out, up to ``max_loaded``.

Threads: every core but one by default (``default_threads``), for prompt and output alike.
llama.cpp's threads spin while they work: given every core, a generation starves the API's
own threads (authentication, search, SQLite) of the CPU, and on 2 cores a flood of
generations would make every other tenant's requests wait on it. One core left over keeps
them answering (``bench/load.py``'s fairness). The core costs a lone stream about a third of
its speed here (llama-server, 2 cores: 31-34 tokens/s on two threads, 20-22 on one), the
price of the API answering while a generation runs.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from hartonomous.errors import InvalidInput, UnprocessableContent
from hartonomous.inference.model_files import ModelFiles
from hartonomous.inference.types import (
    Completion,
    CompletionRequest,
    Control,
    ModelRef,
    ModelUnavailable,
)

log = logging.getLogger(__name__)

# Batch-invariant CPU kernels, the same in every engine (this one and llama_server): ggml
# picks some matmul kernels by how many token rows a step holds (repacked weights: GEMV below
# 4 rows, GEMM from 4; unpacked K-quants: vec_dot below 8, the tiled kernel from 8), and the
# kernels round differently, so a sequence's greedy text changed with the batch around it.
# Weights are loaded unpacked and the tiled kernel is off: every weight row meets every token
# row in the same dot product at any batch size (docs/serving.md). Measured on 2 cores: one
# stream 19.2 tok/s unpacked against 19.5 repacked.
# Attention's F16 products had the same split (llamafile's tinyBLAS from 2 rows, vec_dot at
# 1) with no switch: the llama.cpp both engines run is patched (scripts/llama-patches), and
# LLAMA_BUILD names that build (the wheel's version, the server's cache folder).
BATCH_INVARIANT_ENV = {"GGML_CPU_TILED_MM": "0"}
LLAMA_BUILD = "0.3.36+hartonomous1"
_unpacked_lock = threading.Lock()


def use_batch_invariant_kernels() -> None:
    """Turns ggml's tiled matmul off for this process (whatever the environment said: both
    engines must run the same kernels). ggml reads the switch once, at the first matmul in
    the process: a process that runs llama.cpp before its first ``open_llama`` (a test
    session, a benchmark) calls this first."""
    os.environ.update(BATCH_INVARIANT_ENV)


def open_llama(path: str, **kwargs: Any) -> Any:
    """``llama_cpp.Llama(path, **kwargs)`` with the batch-invariant kernels (see above).

    llama-cpp-python's ``Llama`` takes no argument for ``llama_model_params.use_extra_bufts``
    (pinned 0.3.36) and builds its params from ``llama_model_default_params()`` inside its
    constructor, so that one call is wrapped for the duration of the load."""
    import llama_cpp.llama_cpp as bindings  # the module whose function Llama() calls
    from llama_cpp import Llama

    use_batch_invariant_kernels()
    with _unpacked_lock:
        defaults = bindings.llama_model_default_params

        def unpacked() -> Any:
            params = defaults()
            params.use_extra_bufts = False
            return params

        bindings.llama_model_default_params = unpacked
        try:
            llm = Llama(path, **kwargs)
        finally:
            bindings.llama_model_default_params = defaults
    if llm.model_params.use_extra_bufts:  # a llama-cpp-python that no longer calls it there
        raise RuntimeError("llama-cpp-python loaded the model repacked: see open_llama")
    return llm


@dataclass(frozen=True)
class EngineOptions:
    n_ctx: int = 4096
    n_threads: int | None = None  # None: default_threads()
    n_gpu_layers: int = 0  # -1: everything on the GPU (the worker's setting)
    max_loaded: int = 2


def every_core() -> int:
    """The cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def default_threads() -> int:
    """Every core this process may run on but one (all of one): see the module's notes."""
    return max(every_core() - 1, 1)


class _Sampled:
    """Counts sampled tokens: llama-cpp-python calls a stopping criterion once per sampled
    token, then once more when generation ends (pinned version, held by a test), so the
    count is the calls less one. The streamed chunks cannot be counted instead (tokens that
    end inside a UTF-8 character or a possible stop sequence are merged), and a logits
    processor would cost a 262k-entry array per token (Gemma's vocabulary): 12% of the
    tokens per second, measured.

    It is also where a generation is cancelled: returning True stops llama.cpp at this token
    (the one just sampled is counted, it ran, but not sent)."""

    def __init__(self, control: Control | None = None) -> None:
        self.calls = 0
        self.first_at: float | None = None
        self.control = control
        self.stopped = False  # by a cancel

    def __call__(self, _input_ids: Any, _logits: Any) -> bool:
        if self.calls == 0:
            self.first_at = time.perf_counter()
        self.calls += 1
        if self.control is None:
            return False
        if self.calls > 1:  # the token of the call before this one has run
            self.control.ran(1)
        self.stopped = self.stopped or self.control.cancelled
        return self.stopped

    @property
    def count(self) -> int:
        return max(self.calls - 1, 0)


class LlamaEngine:
    def __init__(self, files: ModelFiles, options: EngineOptions | None = None) -> None:
        self.files = files
        self.options = options or EngineOptions()
        self._loaded: OrderedDict[str, tuple[Any, threading.Lock]] = OrderedDict()
        self._loading: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()

    def loaded(self, model: ModelRef) -> tuple[Any, threading.Lock]:
        """The model's ``Llama`` and its lock, loading it on first use."""
        with self._guard:
            if model.sha256 in self._loaded:
                self._loaded.move_to_end(model.sha256)
                return self._loaded[model.sha256]
            loading = self._loading.setdefault(model.sha256, threading.Lock())
        # One load per file, however many requests wait for it: two would hold the weights
        # twice (on a GPU, twice the memory) only for one copy to be dropped.
        with loading:
            with self._guard:
                if model.sha256 in self._loaded:
                    self._loaded.move_to_end(model.sha256)
                    return self._loaded[model.sha256]
            try:
                llm = self._load(model)
            except BaseException:
                with self._guard:
                    self._loading.pop(model.sha256, None)
                raise
            with self._guard:
                self._loading.pop(model.sha256, None)
                entry = self._loaded.setdefault(model.sha256, (llm, threading.Lock()))
                while len(self._loaded) > self.options.max_loaded:
                    self._loaded.popitem(last=False)
                return entry

    def _load(self, model: ModelRef) -> Any:
        path = self.files.path(model)
        try:
            import llama_cpp  # noqa: F401 - only whether it is installed
        except ImportError as exc:  # the Function App deploys without llama.cpp
            raise ModelUnavailable(
                "llama.cpp is not installed in this process: install the 'local' extra, or "
                "point HARTONOMOUS_INFERENCE_URL at the GPU worker"
            ) from exc

        o = self.options
        threads = o.n_threads or default_threads()
        started = time.perf_counter()
        try:
            llm = open_llama(
                str(path),
                n_ctx=o.n_ctx,
                n_threads=threads,
                n_threads_batch=threads,  # llama-cpp-python's default: every core
                n_gpu_layers=o.n_gpu_layers,
                verbose=False,
            )
        except ValueError as exc:  # llama-cpp-python: "Failed to load model from file"
            # The file passed ingestion's header checks but llama.cpp refuses it (an
            # architecture it does not run, tensors it cannot read): no retry will help.
            raise UnprocessableContent(
                f"model {model.id!r} cannot be loaded by llama.cpp ({exc}); it cannot generate",
                model_id=model.id,
            ) from exc
        log.info("loaded %s in %.1f s", model.id, time.perf_counter() - started)
        return llm

    def loaded_sha256s(self) -> list[str]:
        """The files loaded now, by SHA-256, least recently used first (health reports)."""
        with self._guard:
            return list(self._loaded)

    def count_tokens(self, model: ModelRef, text: str) -> int:
        llm, _ = self.loaded(model)
        return len(llm.tokenize(text.encode("utf-8"), add_bos=False, special=False))

    def context_length(self, model: ModelRef) -> int:
        llm, _ = self.loaded(model)
        return int(llm.n_ctx())

    def complete(self, model: ModelRef, request: CompletionRequest) -> Completion:
        from hartonomous.inference.types import finish

        return finish(self.stream(model, request))

    def stream(self, model: ModelRef, request: CompletionRequest) -> Iterator[str | Completion]:
        from llama_cpp.llama import StoppingCriteriaList

        llm, lock = self.loaded(model)
        grammar = _grammar(request.json_schema)
        control = request.control
        with lock:
            if control is not None and control.cancelled:  # gone while it waited for the lock
                yield Completion("", "cancelled", 0, 0)
                return
            prompt_tokens = len(llm.tokenize(request.prompt.encode("utf-8"), special=True))
            room = llm.n_ctx() - prompt_tokens
            if room < 1:
                raise UnprocessableContent(
                    f"the prompt is {prompt_tokens} tokens; model {model.id!r} holds "
                    f"{llm.n_ctx()} (prompt and output together)",
                    prompt_tokens=prompt_tokens,
                    context_tokens=llm.n_ctx(),
                )
            # The whole prompt is evaluated every time: reusing a cached prefix evaluates the
            # rest in other batch shapes, and that changed temperature-0 outputs (' Earth' then
            # '' on AVX; 5 of bench/generation.py's 8 after a warm-up on AVX2), so a receipt's
            # prompt would not give its text again (tests/test_determinism.py).
            llm.reset()
            sampled = _Sampled(control)
            if control is not None:
                control.evaluated(prompt_tokens)
            started = time.perf_counter()
            finish_reason = "length"
            pieces = llm.create_completion(
                request.prompt,
                max_tokens=min(request.max_tokens, room),
                temperature=request.temperature,
                stop=list(request.stop) or None,
                seed=request.seed,
                grammar=grammar,
                stopping_criteria=StoppingCriteriaList([sampled]),
                stream=True,
            )
            text: list[str] = []
            for chunk in pieces:
                choice = chunk["choices"][0]
                if choice["text"]:
                    text.append(choice["text"])
                    yield choice["text"]
                if choice.get("finish_reason"):
                    finish_reason = choice["finish_reason"]
            ended = time.perf_counter()
            if sampled.stopped:
                finish_reason = "cancelled"
        yield Completion(
            text="".join(text),
            finish_reason=finish_reason,
            prompt_tokens=prompt_tokens,
            completion_tokens=sampled.count,
            prompt_ms=((sampled.first_at or ended) - started) * 1000,
            generation_ms=(ended - started) * 1000,
        )


def _grammar(schema: dict[str, Any] | None) -> Any:
    if schema is None:
        return None
    from llama_cpp.llama_grammar import LlamaGrammar

    try:
        return LlamaGrammar.from_json_schema(json.dumps(schema), verbose=False)
    except Exception as exc:  # the converter raises bare Exceptions on schemas it cannot use
        raise InvalidInput(f"json_schema cannot be turned into a grammar: {exc}") from exc
