"""The prompt a base completion model sees: retrieved context, then the question.

Gemma 3 270M (the local default) is a base model: it continues text rather than following
chat turns, so the prompt is a document whose natural continuation is the answer. Context
that does not fit the model's window is left out from the lowest rank up, and the receipt
lists only what the model actually saw.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from hartonomous.knowledge.search import SearchResult

# Conservative for the tokenizers we ship (about 4 characters a token in English): the
# budget is checked in characters, so no tokenizer round trip sits on the request path;
# llama.cpp still refuses a prompt that does not fit, with a clear 422.
CHARS_PER_TOKEN = 3
HEADER = "Use the numbered passages to answer the question.\n\n"
DEFAULT_STOP = ("\nQuestion:", "\n\n\n")


@dataclass(frozen=True)
class Assembled:
    text: str
    used: list[SearchResult]  # the passages in the prompt, in rank order
    left_out: int  # passages that did not fit


def assemble(
    question: str, passages: Sequence[SearchResult], *, context_tokens: int, max_tokens: int
) -> Assembled:
    tail = f"Question: {question.strip()}\nAnswer:"
    budget = (context_tokens - max_tokens) * CHARS_PER_TOKEN - len(HEADER) - len(tail)
    parts: list[str] = []
    used: list[SearchResult] = []
    for passage in passages:
        block = f"[{len(used) + 1}] {' '.join(passage.text.split())}\n\n"
        if len(block) > budget:
            break
        parts.append(block)
        used.append(passage)
        budget -= len(block)
    body = HEADER + "".join(parts) if used else ""
    return Assembled(body + tail, used, len(passages) - len(used))
