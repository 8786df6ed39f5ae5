"""The local world's workflow runtime: the Durable host, its client and the timer triggers."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from hartonomous.store.engine import Engines
from hartonomous.workflows.client import LocalDurableClient
from hartonomous.workflows.host import LocalDurableHost
from hartonomous.workflows.registry import Registry
from hartonomous.workflows.timers import TimerScheduler


@dataclass
class LocalWorkflowRuntime:
    host: LocalDurableHost
    client: LocalDurableClient
    timers: TimerScheduler

    @classmethod
    def build(
        cls, engines: Engines, functions: Iterable[Any], *, activity_workers: int
    ) -> LocalWorkflowRuntime:
        registry = Registry.from_functions(functions)
        host = LocalDurableHost(engines, registry, max_activity_workers=activity_workers)
        client = LocalDurableClient(host)
        return cls(host, client, TimerScheduler(registry.timers, client=client))

    def start(self) -> None:
        self.host.start()
        self.timers.start()

    def stop(self) -> None:
        self.timers.stop()
        self.host.stop()
