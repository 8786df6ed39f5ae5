"""The GPU worker: llama.cpp and the embedder behind an OpenAI-compatible HTTP API."""

from hartonomous.worker.app import create_worker_app, worker_app_from_env

__all__ = ["create_worker_app", "worker_app_from_env"]
