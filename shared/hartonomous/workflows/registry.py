"""The functions the local host runs, read from the same indexed Function App as Azure's.

``function_app.app.get_functions()`` yields what the Functions host would index; the local
host takes orchestrators, activities and timer triggers from it, so a function registered on
a blueprint in ``functions/`` runs in both worlds without a second registration.
"""

from __future__ import annotations

import asyncio
import inspect
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from azure.functions import meta
from azure.functions.durable_functions import ActivityTriggerConverter
from azure.functions.timer import TimerRequest

OrchestratorHandler = Callable[[str], str]


@dataclass(frozen=True)
class Activity:
    name: str
    fn: Callable[..., Any]
    input_name: str

    def run(self, input_json: str | None) -> str | None:
        """Decode the input and encode the result with the worker's own converter."""
        data = ActivityTriggerConverter.decode(
            meta.Datum(type="json", value=input_json if input_json is not None else "null"),
            trigger_metadata=None,
        )
        result = self.fn(**{self.input_name: data})
        if inspect.isawaitable(result):
            result = asyncio.run(_awaited(result))
        encoded = ActivityTriggerConverter.encode(result, expected_type=None)
        return None if encoded.value is None else str(encoded.value)


async def _awaited(awaitable: Any) -> Any:
    return await awaitable


@dataclass(frozen=True)
class TimerFunction:
    name: str
    schedule: str  # NCRONTAB: second minute hour day month day-of-week
    fn: Callable[..., Any]
    arg_name: str
    run_on_startup: bool = False
    client_name: str | None = None  # a durableClient binding's parameter (starts workflows)

    def run(self, past_due: bool = False, client: Any = None) -> None:
        kwargs: dict[str, Any] = {self.arg_name: TimerRequest(past_due=past_due)}
        if self.client_name is not None:
            if client is None:
                raise RuntimeError(f"timer {self.name!r} needs a Durable client")
            kwargs[self.client_name] = client
        result = self.fn(**kwargs)
        if inspect.isawaitable(result):
            asyncio.run(_awaited(result))


@dataclass
class Registry:
    orchestrators: dict[str, OrchestratorHandler] = field(default_factory=dict)
    activities: dict[str, Activity] = field(default_factory=dict)
    timers: list[TimerFunction] = field(default_factory=list)

    @classmethod
    def from_functions(cls, functions: Iterable[Any]) -> Registry:
        """From ``FunctionApp.get_functions()`` (call that once per app: it validates names)."""
        registry = cls()
        for function in functions:
            trigger = function.get_trigger()
            name = function.get_function_name()
            user_function = function.get_user_function()
            if trigger.type == "orchestrationTrigger":
                for alias in {name, getattr(trigger, "orchestration", None) or name}:
                    registry.orchestrators[alias] = user_function
            elif trigger.type == "activityTrigger":
                activity = Activity(name, user_function, trigger.name)
                for alias in {name, getattr(trigger, "activity", None) or name}:
                    registry.activities[alias] = activity
            elif trigger.type == "timerTrigger":
                client = next(
                    (b.name for b in function.get_bindings() if b.type == "durableClient"), None
                )
                if client is not None:  # the SDK's wrapper builds a client from the host's
                    # JSON; the local host hands its own client to the function it wraps
                    user_function = getattr(user_function, "__wrapped__", user_function)
                registry.timers.append(
                    TimerFunction(
                        name,
                        trigger.schedule,
                        user_function,
                        trigger.name,
                        bool(getattr(trigger, "run_on_startup", False)),
                        client,
                    )
                )
        return registry

    def describe(self) -> str:
        return json.dumps(
            {
                "orchestrators": sorted(self.orchestrators),
                "activities": sorted(self.activities),
                "timers": [t.name for t in self.timers],
            }
        )
