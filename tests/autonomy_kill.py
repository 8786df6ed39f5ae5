"""The victim of the loop's kill-and-resume test (tests/test_autonomy_e2e.py), run as a script:

    python autonomy_kill.py DATA_DIR TENANT_ID start   # starts a run; killed during Act
    python autonomy_kill.py DATA_DIR TENANT_ID resume  # the host resumes it to its end

The platform is built as ``hartonomous serve`` builds it (every function on the local
Durable host, MiniLM in process) on the store in DATA_DIR. When ``AUTONOMY_KILL_MARKER``
names a file, ``learn_association``'s executor writes it after its apply has committed and
then sleeps: the test kills the process in that window, after the effect and before the
activity's completion reaches the workflow's history. The hook lives here, not in the
platform.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from functions import indexed_app, runtime
from hartonomous.autonomy.actions.base import ActionContext, ActionExecutor, Measurement
from hartonomous.bootstrap import Platform, bootstrap
from hartonomous.settings import Settings

MARKER = "AUTONOMY_KILL_MARKER"


class PausedAfterApply(ActionExecutor):
    """An executor that stops for good once its apply has committed (the process dies here)."""

    def __init__(self, inner: ActionExecutor, marker: Path) -> None:
        self.inner, self.marker, self.spec = inner, marker, inner.spec

    def check(self, ctx: ActionContext) -> None:
        self.inner.check(ctx)

    def apply(self, ctx: ActionContext) -> dict[str, Any]:
        result = self.inner.apply(ctx)
        self.marker.write_text(json.dumps({"action_id": ctx.action_id, "result": result}))
        time.sleep(600)
        return result

    def revert(self, ctx: ActionContext, result: dict[str, Any]) -> None:
        self.inner.revert(ctx, result)

    def measure(self, ctx: ActionContext) -> Measurement:
        return self.inner.measure(ctx)


def pause_after_apply(platform: Platform, marker: Path) -> None:
    activities = platform.autonomy_loop()
    executors = activities.executors

    def paused() -> dict[str, ActionExecutor]:
        built = dict(executors())
        built["learn_association"] = PausedAfterApply(built["learn_association"], marker)
        return built

    activities.executors = paused


def main(data_dir: str, tenant_id: str, mode: str) -> None:
    platform = bootstrap(Settings(data_dir=Path(data_dir)), functions=indexed_app().get_functions())
    runtime.use(platform)
    if os.environ.get(MARKER):
        pause_after_apply(platform, Path(os.environ[MARKER]))
    platform.start_background()
    assert platform.workflows is not None
    if mode == "start":
        run = asyncio.run(platform.autonomy.start_run(platform.workflows.client, tenant_id))
        print(json.dumps({"run_id": run.id, "instance_id": run.instance_id}), flush=True)
        time.sleep(120)  # killed long before
        sys.exit(3)
    active = platform.autonomy._active_run(tenant_id)
    assert active is not None, "no active run to resume"
    row = platform.workflows.host.wait_for(active.instance_id, timeout=120)
    run = platform.autonomy.run(tenant_id, active.id).run
    print(json.dumps({"run_id": run.id, "status": run.status, "workflow": row.runtime_status,
                      "error": row.error}), flush=True)  # fmt: skip
    platform.close()


if __name__ == "__main__":
    main(*sys.argv[1:4])
