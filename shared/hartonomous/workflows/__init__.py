"""Durable workflows: orchestrator and activity code, and the local host that runs them.

Orchestrators here are plain generator functions over a ``DurableOrchestrationContext``; the
thin wrappers in ``functions/`` register them on ``df.Blueprint`` objects for Azure, and the
local host (``host.py``) runs the very same registered functions on one machine.
"""
