"""An agent step's prompt, the JSON schema the model decodes under, and reading its output.

The model sees passages by handle (``S1``, ``S2``, ... in order of first appearance in the
run: retrieval, then what tools surfaced) and cites them by handle; the platform expands
handles to atom ids. The schema offers one branch per compiled tool (its registry schema)
and an answer branch, so a local model under the grammar can only propose the agent's own
tools; a remote or compromised model is not bound by it, which is why the governor judges
every proposal in code. Nothing in the prompt varies between two runs of the same version on
the same input (no ids, no times), so temperature 0 with a seed repeats byte for byte.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from hartonomous.agents.compiled import CompiledAgent
from hartonomous.autonomy.registry import REGISTRY

PASSAGE_CHARS = 300  # of each passage in the prompt
INPUT_CHARS = 2000
INSTRUCTIONS_CHARS = 2000
HISTORY_STEPS = 6  # the most recent steps the prompt recalls
OBSERVATION_CHARS = 200
MAX_CITATIONS = 5
MAX_OUTPUT_CHARS = 64 * 1024  # more is not parsed


@dataclass(frozen=True)
class Source:
    handle: str
    atom_id: str
    text: str


@dataclass(frozen=True)
class Proposal:
    """The model's step: a tool call, an answer, or neither (``invalid`` says why)."""

    tool: str | None = None
    arguments: Any = None
    answer: str | None = None
    citations: tuple[str, ...] = ()
    invalid: str | None = None


UNDECODED = ("maxLength", "minLength", "pattern", "format")
MAX_ITEMS_DECODED = 8  # larger item bounds also unroll into chains of rules


def decodable(schema: Any) -> Any:
    """The schema as the grammar takes it: without string bounds, patterns and formats, and
    without item bounds over ``MAX_ITEMS_DECODED`` (a tenant's output schema goes through here
    too).

    llama.cpp expands ``maxLength: 2000`` into a chain of 2,000 optional rules, and its
    sampler crashed (a segmentation fault) on the search tool's schema on this machine; the
    step's ``max_tokens`` bounds the output anyway, and the governor checks the registry's
    full schema afterwards."""
    if isinstance(schema, dict):
        return {
            k: decodable(v)
            for k, v in schema.items()
            if k not in UNDECODED and not (k in ("minItems", "maxItems") and v > MAX_ITEMS_DECODED)
        }
    if isinstance(schema, list):
        return [decodable(v) for v in schema]
    return schema


def step_schema(agent: CompiledAgent, handles: list[str]) -> dict[str, Any]:
    """``{"tool", "arguments"}`` for each compiled tool, or ``{"answer", "citations"}``."""
    branches: list[dict[str, Any]] = [
        {
            "type": "object",
            "properties": {
                "tool": {"const": t.name},
                "arguments": decodable(REGISTRY[t.name].parameters),
            },
            "required": ["tool", "arguments"],
            "additionalProperties": False,
        }
        for t in agent.tools
    ]
    answer: dict[str, Any] = decodable(agent.output_schema) or {"type": "string"}
    cites: dict[str, Any] = (
        {"type": "array", "items": {"enum": handles}, "maxItems": MAX_CITATIONS}
        if handles
        else {"type": "array", "maxItems": 0}
    )
    branches.append(
        {
            "type": "object",
            "properties": {"answer": answer, "citations": cites},
            "required": ["answer", "citations"],
            "additionalProperties": False,
        }
    )
    return {"anyOf": branches}


def prompt_for(
    agent: CompiledAgent, task: str, sources: list[Source], history: list[str], budget_chars: int
) -> tuple[str, list[Source]]:
    """A document whose natural continuation is the next step, and the sources it shows
    (only those may be cited). It fits ``budget_chars`` (the model's context less the step's
    completion, at ``CHARS_PER_TOKEN``): the oldest history goes first, then the last
    sources, so the task and the tools always stay."""
    history = history[-HISTORY_STEPS:]
    while True:
        text = _document(agent, task, sources, history)
        if len(text) <= budget_chars or not (history or sources):
            return text, sources
        if history:
            history = history[1:]
        else:
            sources = sources[:-1]


def _document(agent: CompiledAgent, task: str, sources: list[Source], history: list[str]) -> str:
    lines = [agent.instructions[:INSTRUCTIONS_CHARS] or f"You are {agent.name}.", ""]
    if agent.tools:
        lines.append("Tools (call one with its arguments as JSON):")
        lines += [f"- {t.name}: {REGISTRY[t.name].description}" for t in agent.tools]
        lines.append("")
    if sources:
        lines.append("Passages (cite them by their handle):")
        lines += [f"[{s.handle}] {' '.join(s.text.split())[:PASSAGE_CHARS]}" for s in sources]
        lines.append("")
    if history:
        lines.append("Steps so far:")
        lines += history
        lines.append("")
    lines.append(f"Task: {task[:INPUT_CHARS]}")
    lines.append(
        'Reply with one JSON object: {"tool": ..., "arguments": {...}} to use a tool, or '
        '{"answer": ..., "citations": [handles]} to answer.'
    )
    lines.append("Next step:")
    return "\n".join(lines)


def observation(tool: str, arguments: Any, status: str, detail: str | None,
                handles: list[str]) -> str:  # fmt: skip
    """One line of the history: what was called and what came of it."""
    args = json.dumps(arguments, sort_keys=True, ensure_ascii=False)[:OBSERVATION_CHARS]
    if status == "executed":
        what = f"found {', '.join(handles)}" if handles else "done"
    else:
        what = f"{status}" + (f": {detail[:OBSERVATION_CHARS]}" if detail else "")
    return f"- {tool} {args} -> {what}"


def parse(text: str, handle_ids: dict[str, str], agent: CompiledAgent) -> Proposal:
    """The model's output as a proposal; handles become atom ids (a raw id passes through,
    for the governor to judge). An answer under an output schema is kept as canonical JSON."""
    try:
        value = json.loads(text[:MAX_OUTPUT_CHARS])
    except ValueError:
        return Proposal(invalid="the output is not JSON")
    if not isinstance(value, dict):
        return Proposal(invalid="the output is not a JSON object")
    if "answer" in value:
        raw = value["answer"]
        if agent.output_schema is None and not isinstance(raw, str):
            return Proposal(invalid="the answer is not a string")
        answer = raw if isinstance(raw, str) and agent.output_schema is None else (
            json.dumps(raw, sort_keys=True, ensure_ascii=False)
        )  # fmt: skip
        cited = value.get("citations", [])
        if not isinstance(cited, list) or not all(isinstance(c, str) for c in cited):
            return Proposal(invalid="citations must be a list of handles")
        ids = tuple(dict.fromkeys(str(handle_ids.get(c, c)) for c in cited[: MAX_CITATIONS * 4]))
        return Proposal(answer=answer, citations=ids)
    tool = value.get("tool")
    if isinstance(tool, str) and tool:
        return Proposal(tool=tool[:64], arguments=value.get("arguments", {}))
    return Proposal(invalid="the output is neither a tool call nor an answer")
