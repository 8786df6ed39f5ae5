"""Trigger adapters only: each function hands its input to ``hartonomous`` and returns.

``blueprints()`` is the one list of them: ``function_app.py`` registers it for Azure and
``hartonomous serve`` registers the same list on its local Durable host and timer scheduler.
"""

from __future__ import annotations

import azure.durable_functions as df


def blueprints() -> list[df.Blueprint]:
    from functions.agents import bp as agents
    from functions.autonomy import bp as autonomy
    from functions.billing import bp as billing
    from functions.concepts import bp as concepts
    from functions.events import bp as events
    from functions.http_api import bp as http_api
    from functions.knowledge import bp as knowledge
    from functions.maintenance import bp as maintenance
    from functions.models import bp as models
    from functions.uploads import bp as uploads
    from functions.workflow_failures import bp as workflow_failures
    from functions.workflows_diagnostics import bp as workflows_diagnostics

    return [http_api, workflows_diagnostics, maintenance, knowledge, models, events, uploads,
            workflow_failures, autonomy, agents, billing, concepts]  # fmt: skip


def indexed_app() -> df.DFApp:
    """A Function App with every blueprint registered, as the Functions host indexes it."""
    app = df.DFApp()
    for blueprint in blueprints():
        app.register_functions(blueprint)
    return app
