"""Metering: an append-only usage ledger, idempotent by key."""
