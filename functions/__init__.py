"""Trigger adapters only: each function hands its input to ``hartonomous`` and returns."""
