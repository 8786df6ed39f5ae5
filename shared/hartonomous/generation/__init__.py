"""Generation with receipts: retrieve, assemble, generate, and record exactly what produced it."""
