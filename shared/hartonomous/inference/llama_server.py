"""llama.cpp's own server (``llama-server``) as the inference port: one managed subprocess
per loaded model, whose parallel slots batch concurrent generations (continuous batching).

``LlamaEngine`` runs one generation per model at a time; here up to ``slots`` run in one
batch, and a small model's decode is memory-bound, so eight cost little more than one
(figures: ``bench/batching.py``, docs/serving.md). The binary is built from the llama.cpp
that llama-cpp-python vendors, without OpenMP (``scripts/build-llama-server.sh``).

What llama-server lacks stays here: models by id and SHA-256 (materialized by
``ModelFiles``), the platform's token accounting (exact counts from the server's own
``tokens_evaluated``/``tokens_predicted``), cancellation (closing the stream stops the slot)
and the process's life: a free loopback port, a random key, a health wait, a restart after a
crash, and an end with the platform (or with this process, by ``PR_SET_PDEATHSIG``).

Receipts must reproduce: every request evaluates its whole prompt (``cache_prompt`` off, as
``LlamaEngine`` does), given as the token ids counted here, so the server evaluates exactly
the tokens the receipt's count names.
"""

from __future__ import annotations

import atexit
import ctypes
import json
import logging
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from hartonomous.errors import InvalidInput, ServiceUnavailable, UnprocessableContent
from hartonomous.inference.llama_engine import (
    BATCH_INVARIANT_ENV,
    LLAMA_BUILD,
    default_threads,
    every_core,
)
from hartonomous.inference.model_files import ModelFiles
from hartonomous.inference.types import Completion, CompletionRequest, ModelRef, ModelUnavailable

log = logging.getLogger(__name__)

_FINISH = {"eos": "stop", "word": "stop", "limit": "length"}


def default_binary() -> Path:
    """Where ``make llama-server`` caches the build (outside the clone, like the wheel)."""
    cache = os.environ.get("LLAMA_SERVER_CACHE") or str(
        Path.home() / ".cache" / "hartonomous" / "llama-server"
    )
    return Path(cache) / LLAMA_BUILD / "llama-server"


@dataclass(frozen=True)
class ServerOptions:
    binary: Path | None = None  # None: default_binary()
    n_ctx: int = 4096  # per slot: each generation holds as much as LlamaEngine's
    slots: int = 8  # generations batched together per model
    n_threads: int | None = None  # None: default_threads(), as LlamaEngine
    # Steps of several rows (prompts, and decoding several slots at once); None: every core.
    # Such a step is compute-bound and runs at the generation's lower priority, so it takes the
    # core a lone stream leaves to the API only while the API does not want it. Measured
    # (bench/batching.py, docs/serving.md): 8 concurrent 62-68 tokens/s against 40 with one.
    n_threads_batch: int | None = None
    n_gpu_layers: int = 0
    max_loaded: int = 2
    start_timeout: float = 120.0  # seconds for the model to load
    request_timeout: float = 600.0
    # Off, with the tiled K-quant matmul off too, as LlamaEngine loads (see its
    # BATCH_INVARIANT_ENV): greedy texts alone and 8 concurrent were identical 20 of 20 (1 of
    # 8 with repacking, 4 of 8 unpacked but tiled), bench/batching.py and docs/serving.md.
    repack: bool = False


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    if sys.platform == "linux":
        ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class _Server:
    """One llama-server process serving one model file on a loopback port."""

    def __init__(self, model: ModelRef, path: Path, options: ServerOptions, log_dir: Path):
        self.model = model
        self.path = path
        self.options = options
        self.log_path = log_dir / f"llama-server-{model.sha256[:16]}.log"
        self.key = secrets.token_urlsafe(24)  # other local users cannot use the slots
        self.port = 0
        self.active = 0  # requests in flight: an evicted server stops when this is 0
        self.retired = False
        self._proc: subprocess.Popen[bytes] | None = None
        self._lock = threading.Lock()
        self.client = httpx.Client(
            timeout=httpx.Timeout(options.request_timeout, connect=5.0),
            limits=httpx.Limits(max_connections=options.slots * 4),
            headers={"Authorization": f"Bearer {self.key}"},
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def ensure(self) -> None:
        """Started, or started again after a crash (the next request after it)."""
        with self._lock:
            if self.running:
                return
            if self._proc is not None:
                log.warning(
                    "llama-server for %s exited (%s): restarting it",
                    self.model.id,
                    self._proc.returncode,
                )
            self._start()

    def _command(self) -> list[str]:
        o = self.options
        threads = str(o.n_threads or default_threads())
        binary = o.binary or default_binary()
        return [
            str(binary),
            "--model", str(self.path),
            "--host", "127.0.0.1",
            "--port", str(self.port),
            "--api-key", self.key,
            "--parallel", str(o.slots),
            "--ctx-size", str(o.n_ctx * o.slots),  # split evenly: n_ctx per slot
            "--threads", threads,
            "--threads-batch", str(o.n_threads_batch or every_core()),
            "--n-gpu-layers", str(o.n_gpu_layers),
            "--cont-batching",
            # Off, as llama-cpp-python has it: on, the same prompt gave another greedy text
            # ("Create a new object" against "Create a Python object"), measured here.
            "--flash-attn", "off",
            "--swa-full",  # as llama-cpp-python: a smaller SWA cache changed greedy texts too
            "--repack" if o.repack else "--no-repack",
            "--cache-ram", "0",  # no prompt cache: every prompt is evaluated whole
            "--no-webui",
            "--alias", self.model.id,
        ]  # fmt: skip

    def _start(self) -> None:
        binary = self.options.binary or default_binary()
        if not binary.exists():
            raise ModelUnavailable(
                f"llama-server is not built at {binary}: run 'make llama-server', or set "
                "HARTONOMOUS_INFERENCE_ENGINE=llama-cpp-python"
            )
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        for _attempt in range(3):  # the free port may be taken between probe and bind
            self.port = _free_port()
            with self.log_path.open("wb") as out:
                self._proc = subprocess.Popen(  # noqa: S603 - our binary, our arguments
                    self._command(),
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    env={**os.environ, **BATCH_INVARIANT_ENV},
                    preexec_fn=_die_with_parent,  # prctl only: safe between fork and exec
                )
            if self._wait_healthy():
                log.info("llama-server for %s on port %d", self.model.id, self.port)
                return
        tail = self.log_path.read_text(errors="replace")[-2000:]
        raise ModelUnavailable(f"llama-server did not start for model {self.model.id!r}: {tail}")

    def _wait_healthy(self) -> bool:
        deadline = time.monotonic() + self.options.start_timeout
        assert self._proc is not None
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                return False
            try:
                if self.client.get(f"{self.url}/health", timeout=2.0).status_code == 200:
                    return True
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        self.stop()
        return False

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def post(self, route: str, body: dict[str, Any]) -> Any:
        try:
            response = self.client.post(f"{self.url}{route}", json=body)
        except httpx.HTTPError as exc:
            raise self._gone(exc) from exc
        if response.status_code != 200:
            raise _error(self.model, response.status_code, response.text)
        return response.json()

    def _gone(self, exc: Exception) -> ServiceUnavailable:
        return ServiceUnavailable(
            f"llama-server for model {self.model.id!r} failed ({exc}); it restarts on the "
            "next request",
            headers={"Retry-After": "1"},
        )


def _error(model: ModelRef, status: int, text: str) -> Exception:
    try:
        message = str(json.loads(text)["error"]["message"])
    except (ValueError, KeyError, TypeError):
        message = text[:500]
    if status == 400 and ("grammar" in message.lower() or "json_schema" in message):
        return InvalidInput(f"json_schema cannot be turned into a grammar: {message}")
    if status in (400, 422):
        return UnprocessableContent(f"model {model.id!r}: {message}", model_id=model.id)
    return ServiceUnavailable(f"llama-server for model {model.id!r} answered {status}: {message}")


class LlamaServerEngine:
    """The ``Inference`` port (and ``LlamaEngine``'s other methods) on llama-server."""

    def __init__(self, files: ModelFiles, options: ServerOptions | None = None) -> None:
        self.files = files
        self.options = options or ServerOptions()
        self._servers: OrderedDict[str, _Server] = OrderedDict()
        self._starting: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()
        self._closed = False
        # Stopped with the platform (close), or at the latest with this interpreter.
        self._finalizer = weakref.finalize(self, LlamaServerEngine._stop_all, self._servers)
        atexit.register(self._finalizer)

    def _acquire(self, model: ModelRef) -> _Server:
        """The model's running server, counted as in use until ``_release``."""
        with self._guard:
            if self._closed:
                raise ServiceUnavailable("the inference engine is stopped")
            starting = self._starting.setdefault(model.sha256, threading.Lock())
        with starting:  # one process per file, however many requests wait for it
            with self._guard:
                server = self._servers.get(model.sha256)
            if server is None:
                path = self.files.path(model)
                server = _Server(model, path, self.options, self.files.cache_dir)
            server.ensure()
            with self._guard:
                if self._servers.setdefault(model.sha256, server) is server:
                    self._servers.move_to_end(model.sha256)
                server.active += 1
                evicted = []
                while len(self._servers) > self.options.max_loaded:
                    _, old = self._servers.popitem(last=False)
                    old.retired = True
                    if old.active == 0:
                        evicted.append(old)
        for old in evicted:
            old.stop()
        return server

    def _release(self, server: _Server) -> None:
        with self._guard:
            server.active -= 1
            stop = server.retired and server.active == 0
        if stop:
            server.stop()

    def loaded_sha256s(self) -> list[str]:
        with self._guard:
            return [sha for sha, s in self._servers.items() if s.running]

    def count_tokens(self, model: ModelRef, text: str) -> int:
        return len(self._tokenize(model, text, add_special=False, parse_special=False))

    def context_length(self, model: ModelRef) -> int:
        server = self._acquire(model)
        try:
            models = server.client.get(f"{server.url}/v1/models").json()
            return int(models["data"][0]["meta"]["n_ctx"])
        finally:
            self._release(server)

    def _tokenize(
        self, model: ModelRef, text: str, *, add_special: bool, parse_special: bool
    ) -> list[int]:
        server = self._acquire(model)
        try:
            body = {"content": text, "add_special": add_special, "parse_special": parse_special}
            return list(server.post("/tokenize", body)["tokens"])
        finally:
            self._release(server)

    def complete(self, model: ModelRef, request: CompletionRequest) -> Completion:
        from hartonomous.inference.types import finish

        return finish(self.stream(model, request))

    def stream(self, model: ModelRef, request: CompletionRequest) -> Iterator[str | Completion]:
        control = request.control
        if control is not None and control.cancelled:
            yield Completion("", "cancelled", 0, 0)
            return
        server = self._acquire(model)
        try:
            yield from self._stream(server, request)
        finally:
            self._release(server)

    def _stream(self, server: _Server, request: CompletionRequest) -> Iterator[str | Completion]:
        model, control = server.model, request.control
        # The prompt as llama-cpp-python tokenizes it for a completion (BOS, special tokens
        # parsed), sent as ids: the count billed is the count evaluated.
        body = {"content": request.prompt, "add_special": True, "parse_special": True}
        ids = list(server.post("/tokenize", body)["tokens"])
        n_ctx = self.options.n_ctx
        room = n_ctx - len(ids)
        if room < 1:
            raise UnprocessableContent(
                f"the prompt is {len(ids)} tokens; model {model.id!r} holds {n_ctx} "
                "(prompt and output together)",
                prompt_tokens=len(ids),
                context_tokens=n_ctx,
            )
        payload: dict[str, Any] = {
            "prompt": ids,
            "n_predict": min(request.max_tokens, room),
            "temperature": request.temperature,
            "stop": list(request.stop),
            "stream": True,
            "cache_prompt": False,  # see the module's notes
        }
        if request.seed is not None:
            payload["seed"] = request.seed
        if request.json_schema is not None:
            payload["json_schema"] = request.json_schema
        if control is not None:
            control.evaluated(len(ids))
        text: list[str] = []
        seen = 0  # tokens predicted so far, by the server's count
        last: dict[str, Any] = {}
        cancelled = False
        try:
            with server.client.stream("POST", f"{server.url}/completion", json=payload) as r:
                if r.status_code != 200:
                    raise _error(model, r.status_code, r.read().decode(errors="replace"))
                for line in r.iter_lines():
                    field, _, data = line.partition(": ")
                    if field not in ("data", "error"):
                        continue  # blank lines between events, pings
                    chunk = json.loads(data)
                    if field == "error":
                        chunk = {"error": chunk}
                    if "error" in chunk:
                        error = chunk["error"]
                        raise _error(model, int(error.get("code", 500)), json.dumps(chunk))
                    predicted = int(chunk.get("tokens_predicted", seen))
                    if control is not None and predicted > seen:
                        control.ran(predicted - seen)
                    seen = max(seen, predicted)
                    if chunk.get("content"):
                        text.append(chunk["content"])
                        yield chunk["content"]
                    if chunk.get("stop"):
                        last = chunk
                        break
                    if control is not None and control.cancelled:
                        cancelled = True  # leaving the block closes the stream: the slot stops
                        break
        except httpx.HTTPError as exc:
            raise server._gone(exc) from exc
        if cancelled:
            yield Completion("".join(text), "cancelled", len(ids), seen)
            return
        if not last:
            raise ServiceUnavailable(f"llama-server for model {model.id!r} ended its stream early")
        timings = last.get("timings") or {}
        prompt_ms = float(timings.get("prompt_ms", 0.0))
        yield Completion(
            text="".join(text),
            finish_reason=_FINISH.get(str(last.get("stop_type")), "length"),
            prompt_tokens=int(last.get("tokens_evaluated", len(ids))),
            completion_tokens=int(last.get("tokens_predicted", seen)),
            prompt_ms=prompt_ms,
            generation_ms=prompt_ms + float(timings.get("predicted_ms", 0.0)),
        )

    def close(self) -> None:
        """Stops every server (the platform's end)."""
        with self._guard:
            self._closed = True
        self._finalizer()

    @staticmethod
    def _stop_all(servers: OrderedDict[str, _Server]) -> None:
        for server in list(servers.values()):
            server.stop()
            server.client.close()
        servers.clear()
