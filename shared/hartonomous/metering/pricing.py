"""What usage costs, in credits (the unit billing converts to money with Stripe).

One table, so a receipt's cost and the ledger's quantities are priced the same way.
"""

from __future__ import annotations

from dataclasses import dataclass

CREDITS_PER_1K = {
    "generation.prompt_tokens": 0.1,
    "generation.completion_tokens": 0.4,
    "embedding.texts": 0.02,
    "search.queries": 0.01 * 1000,  # per query: 0.01 credits
    "agent.notes": 0.01 * 1000,  # an agent's save_note: 0.01 credits
    "concepts.chunks": 0.05,  # a discovery: 0.05 credits per 1,000 chunks clustered
}


@dataclass(frozen=True)
class Cost:
    credits: float
    lines: dict[str, float]


def price(quantities: dict[str, int]) -> Cost:
    lines = {
        kind: round(quantity * CREDITS_PER_1K.get(kind, 0.0) / 1000, 6)
        for kind, quantity in quantities.items()
    }
    return Cost(round(sum(lines.values()), 6), lines)
