"""One orchestration instance as the dispatcher holds it: history, numbering, retry state.

History events are kept JSON-encoded in their "played" form, the way they are stored; the
events of the episode under way (from its ``OrchestratorStarted`` on) are sent to the SDK
with ``IsPlayed: false``, as the extension does.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from hartonomous.workflows.history import Event
from hartonomous.workflows.persistence import InstanceRow

TERMINAL = frozenset({"Completed", "Failed", "Terminated"})
_PLAYED, _UNPLAYED = '"IsPlayed":true', '"IsPlayed":false'


def encode(event: Event) -> str:
    return json.dumps({**event, "IsPlayed": True}, separators=(",", ":"))


@dataclass
class Retry:
    """An activity or sub-orchestration called with retry options, across its attempts."""

    kind: str  # "activity" | "suborch"
    name: str
    input: str | None
    options: dict[str, Any]
    instance_id: str | None = None  # an explicit sub-orchestration id, kept across attempts
    attempt: int = 1

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class Instance:
    row: InstanceRow
    events: list[str] = field(default_factory=list)
    persisted: int = 0
    reset: bool = False

    # -- host bookkeeping, persisted in row.host_state ------------------------------------
    @property
    def state(self) -> dict[str, Any]:
        return self.row.host_state

    @classmethod
    def new(cls, row: InstanceRow) -> Instance:
        row.host_state = cls.fresh_state()
        return cls(row)

    @staticmethod
    def fresh_state() -> dict[str, Any]:
        return {
            "next_id": 0,  # the SDK's task sequence number
            "known": [],  # fingerprints of the actions seen so far (determinism check)
            "ids": [],  # event id of each known action (None when it takes none)
            "pending": [],  # scheduled tasks and sub-orchestrations not yet completed
            "retries": {},  # event id of the current attempt -> Retry
            "retry_timers": {},  # timer id -> event id of the attempt that failed
            "cancelled": [],  # timers already cancelled
            "open_from": None,  # index of the open episode's OrchestratorStarted
            "open_normal": False,  # the open episode holds events that may resume user code
        }

    @property
    def terminal(self) -> bool:
        return self.row.runtime_status in TERMINAL

    def allocate(self) -> int:
        n: int = self.state["next_id"]
        self.state["next_id"] = n + 1
        return n

    def append(self, event: Event) -> None:
        self.events.append(encode(event))

    def context_json(self) -> str:
        """The orchestration trigger's context, as the extension sends it."""
        open_from = self.state["open_from"]
        history = self.events
        if open_from is not None:
            history = self.events[:open_from] + [
                e.replace(_PLAYED, _UNPLAYED, 1) for e in self.events[open_from:]
            ]
        head = json.dumps(
            {
                "input": self.row.input,
                "instanceId": self.row.instance_id,
                "isReplaying": False,
                "parentInstanceId": self.row.parent_instance_id,
                "upperSchemaVersion": 2,
            },
            separators=(",", ":"),
        )
        return '{"history":[' + ",".join(history) + "]," + head[1:]

    def restart(self) -> None:
        """A new execution (continue-as-new): empty history, numbering from zero."""
        self.events = []
        self.persisted = 0
        self.reset = True
        self.row.host_state = self.fresh_state()
