"""The executors of the registry's actions (``registry.py`` holds their contracts).

``build_executors`` takes the platform's parts, not the ``Platform`` (bootstrap builds the
loop: importing it here would be a cycle); services that load models come as getters, so
nothing loads before an action runs.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from hartonomous.autonomy.actions.base import ActionExecutor
from hartonomous.autonomy.registry import LOOP_ACTIONS

if TYPE_CHECKING:
    from hartonomous.concepts.service import ConceptService
    from hartonomous.generation.service import GenerationService
    from hartonomous.knowledge.search import SearchService
    from hartonomous.ports import Embedder, UnitOfWorkFactory
    from hartonomous.services.atoms import AtomService


def build_executors(
    uow_factory: UnitOfWorkFactory,
    atoms: AtomService,
    search: Callable[[], SearchService],
    embedder: Callable[[], Embedder],
    generation: Callable[[], GenerationService],
    concepts: Callable[[], ConceptService],
    max_associations: int = 1000,
) -> dict[str, ActionExecutor]:
    """One executor per registered action, by name; ``max_associations``: the setting
    ``autonomy_max_associations``."""
    from hartonomous.autonomy.actions.cache_answer import CacheAnswer
    from hartonomous.autonomy.actions.discover_concepts import DiscoverConcepts
    from hartonomous.autonomy.actions.learn_association import LearnAssociation
    from hartonomous.autonomy.actions.mark_duplicates import MarkDuplicates
    from hartonomous.autonomy.actions.retry_failed_workflow import RetryFailedWorkflow

    executors: dict[str, ActionExecutor] = {
        "learn_association": LearnAssociation(
            uow_factory, atoms, search, embedder, max_associations
        ),
        "mark_duplicates": MarkDuplicates(uow_factory, search, embedder),
        "retry_failed_workflow": RetryFailedWorkflow(uow_factory),
        "cache_answer": CacheAnswer(uow_factory, generation),
        "discover_concepts": DiscoverConcepts(uow_factory, concepts, lambda: embedder().model_name),
    }
    assert set(executors) == set(LOOP_ACTIONS), "every loop action has an executor"
    return executors
