"""Analyze: real signals from the tenant's data, scored, and the top problem picked.

Signals and the scoring rule (higher first; ties by kind, then key, so a run is repeatable):

- **Knowledge gap** (``knowledge_gaps``, the newest ``GAP_ROWS`` rows, grouped by the
  normalised query): ``occurrences x (1 - best score)``. A question asked often and answered
  badly weighs most; one asked once with a near-miss answer barely counts. Queries with a
  ``learn_association`` pending, approved, applied, kept or rejected are left out (learned
  already, waiting for a human, or refused by one), and so are those Learn reverted in the
  last 7 days (a fix measured as no help is not proposed again until new evidence has had
  time to come; the same holds for reverted cache entries and duplicate pairs). A fix its
  executor's check refused (decider ``check:...``: the data does not allow it) waits the same
  7 days, or it came back every run.
- **Near-duplicates** (chunks at cosine >= 0.95): ``min(pairs x 0.5, 5)``. Duplicates cost
  result slots, not answers: capped so they never outrank a gap users keep hitting. One
  action takes at most ``PAIRS_PER_ACTION`` pairs (a plan's tokens are bounded); the next
  iteration finds the rest.
- **Failed workflow** (``workflow_failures`` not retried yet): ``2`` each. A failed ingestion
  is missing data: worth more than a single bad answer, not more than a recurring gap.
- **Repeated prompt** (the same temperature-0 request ``>= 3`` times in 7 days, not cached: the
  question with its model, k, max_tokens, stop and filters, ``answer_cache.request_material``):
  ``(count - 1) x mean credits x 100``: the credits a cache would have saved, on the scale of
  the others (0.01 credits of generation saved = 1).
- **Cost by operation** (priced usage of the last 7 days): context for the audit, no problem.

A problem whose action the tenant's policy disallows, or that this run handled already, is
skipped (listed with the reason). A knowledge gap needs candidates: the top ``CANDIDATES``
hybrid search results for its query (metered to the run: request id
``autonomy:{run}:{iteration}:analyze:{n}``, at most ``MAX_SEARCHES`` searches); a gap with none
is skipped. No problem left: the run ends (nothing to do, or completed).

The phase row holds the pick, the figures, the skips and (audit level ``full``) every signal;
a replayed activity returns the row's result instead of analysing again.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from hartonomous.autonomy.messages import AnalyzeIn, AnalyzeOut, Problem
from hartonomous.autonomy.policy import Policy
from hartonomous.autonomy.records import PhaseRecord
from hartonomous.autonomy.registry import LOOP_ACTIONS
from hartonomous.autonomy.types import ActionStatus, Phase, ProblemKind
from hartonomous.knowledge.associations import normalise_query
from hartonomous.knowledge.search import Mode, SearchService
from hartonomous.metering.pricing import price
from hartonomous.ports import UnitOfWork, UnitOfWorkFactory
from hartonomous.services.clock import utcnow

GAP_ROWS = 500
CANDIDATES = 5
MAX_SEARCHES = 3
SNIPPET_CHARS = 240
PAIRS_PER_ACTION = 3
DUPLICATE_CAP = 5.0
FAILED_WORKFLOW_SCORE = 2.0
UNCLUSTERED_MIN_CHUNKS = 100  # fewer chunks: concepts would say little
UNCLUSTERED_MIN_SHARE = 0.5  # new chunks join concepts as they are indexed: only a modality
UNCLUSTERED_CAP = 3.0  # never clustered (or mostly indexed during a run) gets this far
CLUSTERED_MODALITIES = ("text", "code", "document")
WINDOW = timedelta(days=7)
# Actions that block proposing the same fix again (waiting, done, or refused by a human).
BLOCKING = [
    ActionStatus.AWAITING_APPROVAL,
    ActionStatus.APPROVED,
    ActionStatus.APPLIED,
    ActionStatus.KEPT,
    ActionStatus.REJECTED,
]
# A fix Learn measured as no help (reverted) is not proposed again for WINDOW: without this a
# scheduled loop spent every run re-trying the same unhelpful action (measured by bench runs,
# which all re-picked one reverted association).
JUDGED_UNHELPFUL = [ActionStatus.REVERTED]
# A fix the executor's check refused (decider ``check:{action}``) waits the same window: the
# data that failed the check rarely changes within a run's schedule.
CHECK_REFUSED = "check:"
ACTION_FOR = {spec.addresses: spec.name for spec in LOOP_ACTIONS.values()}
KIND_ORDER = {kind: i for i, kind in enumerate(ProblemKind)}


def _digest(*parts: str) -> str:
    return hashlib.sha256("\x1f".join(parts).encode("utf-8")).hexdigest()[:16]


def _ordered(problems: Iterable[Problem]) -> list[Problem]:
    return sorted(problems, key=lambda p: (-p.score, KIND_ORDER[ProblemKind(p.kind)], p.key))


@dataclass
class Analyzer:
    uow_factory: UnitOfWorkFactory
    search: Callable[[], SearchService]
    policy: Callable[[str], Policy]
    clock: Callable[[], datetime] = utcnow

    def analyze(self, inp: AnalyzeIn) -> AnalyzeOut:
        started, began = self.clock(), time.perf_counter()
        with self.uow_factory(write=False, tenant_id=inp.tenant_id) as uow:
            done = uow.autonomy.phase(inp.tenant_id, inp.run_id, inp.iteration, Phase.ANALYZE)
        if done is not None and "result" in done.outputs:
            return AnalyzeOut.from_json(done.outputs["result"])
        policy = self.policy(inp.tenant_id)
        self.search().writes.flush()  # gaps searches just recorded are read too
        problems, context = self.signals(inp.tenant_id, started)
        skipped: list[dict[str, str]] = []
        picked: Problem | None = None
        searches = 0
        for problem in _ordered(problems):
            action = ACTION_FOR[ProblemKind(problem.kind)]
            decision = policy.decide(action)
            if problem.key in inp.handled:
                skipped.append({"key": problem.key, "reason": "handled earlier in this run"})
                continue
            if not decision.allowed:
                skipped.append({"key": problem.key, "reason": f"disallowed: {decision.rule}"})
                continue
            if problem.kind == ProblemKind.KNOWLEDGE_GAP:
                if searches == MAX_SEARCHES:
                    skipped.append({"key": problem.key, "reason": "search limit of the phase"})
                    continue
                problem = self._with_candidates(inp, problem, searches)
                searches += 1
                if not problem.evidence["candidates"]:
                    skipped.append({"key": problem.key, "reason": "no candidate passages"})
                    continue
            picked = problem
            break
        if searches:
            self.search().writes.flush()  # the searches' usage rows, before the phase's
        cost = price({"search.queries": searches}).credits if searches else 0.0
        out = AnalyzeOut(picked, len(problems), skipped, cost)
        outputs: dict[str, Any] = {
            "result": out.to_json(),
            "searches": searches,
            "cost_by_operation": context,
        }
        if policy.audit_level == "full":
            outputs["signals"] = [p.to_json() for p in _ordered(problems)[:50]]
        else:
            outputs["signals"] = [
                {"kind": p.kind, "key": p.key, "score": p.score} for p in _ordered(problems)[:50]
            ]
        row = PhaseRecord(
            tenant_id=inp.tenant_id, run_id=inp.run_id, iteration=inp.iteration,
            phase=Phase.ANALYZE, status="completed", inputs={"handled": inp.handled},
            outputs=outputs, decision=picked.kind if picked else "nothing_to_do",
            decider="analyze:score", cost_credits=cost,
            duration_ms=(time.perf_counter() - began) * 1000, started_at=started,
            ended_at=self.clock(),
        )  # fmt: skip
        with self.uow_factory(write=True, tenant_id=inp.tenant_id) as uow:
            uow.autonomy.record_phase(row)
            uow.commit()
        return out

    # -- the signals -----------------------------------------------------------------------

    def signals(self, tenant_id: str, now: datetime) -> tuple[list[Problem], dict[str, float]]:
        """Every problem found (unfiltered), and the credits by operation of the window."""
        model = self.search().embedder.model_name
        with self.uow_factory(write=False, tenant_id=tenant_id) as uow:
            unhelpful = _recently_unhelpful(uow, tenant_id, now)
            problems = [
                *self._gaps(uow, tenant_id, unhelpful),
                *self._failed_workflows(uow, tenant_id, unhelpful),
            ]
            blocked = _blocked(uow, tenant_id) | unhelpful
            totals = uow.usage.totals(tenant_id, now - WINDOW, None)
        problems += self._unclustered(tenant_id, model, blocked)
        problems += self._duplicates(tenant_id, model, blocked)
        problems += self._repeated_prompts(tenant_id, now, blocked)
        cost = price({t.kind: t.quantity for t in totals})
        return problems, cost.lines

    def _gaps(self, uow: UnitOfWork, tenant_id: str, unhelpful: set[str]) -> list[Problem]:
        learned = {
            normalise_query(str(a.parameters.get("query", "")))
            for a in uow.autonomy.actions(tenant_id, name="learn_association", statuses=BLOCKING)
        }
        learned |= {k.partition(":")[2] for k in unhelpful if k.startswith("learn_association:")}
        groups: dict[str, list[Any]] = {}
        for row in uow.knowledge.gaps(tenant_id, GAP_ROWS):  # newest first
            norm = normalise_query(row.query)
            if norm and norm not in learned:
                groups.setdefault(norm, []).append(row)
        problems = []
        for norm, rows in groups.items():
            best = max((r.best_score or 0.0) for r in rows)
            query = rows[0].query  # as the newest search wrote it
            score = round(len(rows) * (1.0 - max(0.0, min(1.0, best))), 6)
            problems.append(
                Problem(
                    ProblemKind.KNOWLEDGE_GAP.value, f"knowledge_gap:{_digest(norm)}", score,
                    f"{query[:80]!r} searched {len(rows)} times; best score {best:.2f}",
                    {"query": query, "occurrences": len(rows), "best_score": best,
                     "candidates": []},
                )
            )  # fmt: skip
        return problems

    def _failed_workflows(
        self, uow: UnitOfWork, tenant_id: str, unhelpful: set[str]
    ) -> list[Problem]:
        pending = {
            str(a.parameters.get("instance_id"))
            for a in uow.autonomy.actions(
                tenant_id, name="retry_failed_workflow", statuses=BLOCKING
            )
        }
        pending |= {k.partition(":")[2] for k in unhelpful
                    if k.startswith("retry_failed_workflow:")}  # fmt: skip
        return [
            Problem(
                ProblemKind.FAILED_WORKFLOW.value,
                f"failed_workflow:{f.instance_id}",
                FAILED_WORKFLOW_SCORE,
                f"workflow {f.name} {f.instance_id} failed",
                {"instance_id": f.instance_id, "name": f.name, "error": f.error[:300]},
            )
            for f in uow.workflow_failures.open(tenant_id, 50)
            if f.instance_id not in pending
        ]

    def _duplicates(self, tenant_id: str, model: str, blocked: set[str]) -> list[Problem]:
        from hartonomous.knowledge.duplicates import find_near_duplicates

        if "mark_duplicates" in blocked:
            return []  # one marking at a time: the pairs would overlap
        pairs = [
            p
            for p in find_near_duplicates(self.uow_factory, tenant_id, model)
            if f"mark_duplicates:{p[0]}>{p[1]}" not in blocked
        ]
        if not pairs:
            return []
        top = [
            {"duplicate_id": dup, "canonical_id": canon, "similarity": round(float(sim), 4)}
            for dup, canon, sim in pairs[:PAIRS_PER_ACTION]
        ]  # fmt: skip
        ids = sorted(f"{p['duplicate_id']}>{p['canonical_id']}" for p in top)
        return [
            Problem(
                ProblemKind.NEAR_DUPLICATES.value, f"near_duplicates:{_digest(*ids)}",
                min(len(pairs) * 0.5, DUPLICATE_CAP), f"{len(pairs)} near-duplicate chunk pairs",
                {"pairs": top, "total_pairs": len(pairs)},
            )
        ]  # fmt: skip

    def _unclustered(self, tenant_id: str, model: str, blocked: set[str]) -> list[Problem]:
        """Modalities with enough chunks, most of them in no concept, none being discovered."""
        problems = []
        with self.uow_factory(write=False, tenant_id=tenant_id) as uow:
            for modality in CLUSTERED_MODALITIES:
                if f"discover_concepts:{modality}" in blocked:
                    continue
                chunks = uow.concepts.count_chunks(tenant_id, modality, model)
                if chunks < UNCLUSTERED_MIN_CHUNKS or uow.concepts.running(tenant_id, modality):
                    continue
                loose = chunks - uow.concepts.count_members(tenant_id, modality)
                if loose / chunks < UNCLUSTERED_MIN_SHARE:
                    continue
                problems.append(
                    Problem(
                        ProblemKind.UNCLUSTERED_CHUNKS.value, f"unclustered_chunks:{modality}",
                        round(min(UNCLUSTERED_CAP, loose / 1000), 6),
                        f"{loose} of {chunks} {modality} chunks belong to no concept",
                        {"modality": modality, "chunks": chunks, "unclustered": loose},
                    )
                )  # fmt: skip
        return problems

    def _repeated_prompts(self, tenant_id: str, now: datetime, blocked: set[str]) -> list[Problem]:
        from hartonomous.generation.answer_cache import repeated_prompts

        return [
            Problem(
                ProblemKind.REPEATED_PROMPT.value,
                f"repeated_prompt:{r.key[:16]}",
                round((r.count - 1) * r.mean_credits * 100, 6),
                f"{r.prompt[:80]!r} asked {r.count} times",
                {
                    "prompt": r.prompt,
                    "receipt_id": r.latest_receipt_id,
                    "count": r.count,
                    "mean_credits": r.mean_credits,
                    "mean_total_ms": r.mean_total_ms,
                },
            )
            for r in repeated_prompts(self.uow_factory, tenant_id, now - WINDOW)
            if f"cache_answer:{r.prompt}" not in blocked
        ]

    def _with_candidates(self, inp: AnalyzeIn, problem: Problem, n: int) -> Problem:
        results = self.search().search(
            tenant_id=inp.tenant_id,
            query=problem.evidence["query"],
            k=CANDIDATES,
            mode=Mode.HYBRID,
            request_id=f"autonomy:{inp.run_id}:{inp.iteration}:analyze:{n}",
            record_gaps=False,
        )
        candidates = [
            {"atom_id": r.atom_id, "text": " ".join(r.text.split())[:SNIPPET_CHARS],
             "score": round(r.score, 6), "vector_score": r.vector_score,
             "keyword_score": r.keyword_score}
            for r in results
        ]  # fmt: skip
        return Problem(
            problem.kind, problem.key, problem.score, problem.summary,
            {**problem.evidence, "candidates": candidates},
        )  # fmt: skip


def _recently_unhelpful(uow: UnitOfWork, tenant_id: str, now: datetime) -> set[str]:
    """What Learn reverted, or an executor's check refused, within ``WINDOW``, as the keys
    the signals skip: ``learn_association:{normalised query}``, ``cache_answer:{prompt}``,
    ``mark_duplicates:{duplicate}>{canonical}`` per pair, ``retry_failed_workflow:{instance}``,
    ``discover_concepts:{modality}``."""
    out: set[str] = set()
    since = now - WINDOW
    for a in uow.autonomy.actions(tenant_id, statuses=[*JUDGED_UNHELPFUL, ActionStatus.REFUSED]):
        if a.updated_at < since:
            continue
        if a.status == ActionStatus.REFUSED and not (a.decided_by or "").startswith(CHECK_REFUSED):
            continue  # refused by the registry, the policy or a human's rule: not the data
        if a.name == "learn_association":
            out.add(f"learn_association:{normalise_query(str(a.parameters.get('query', '')))}")
        elif a.name == "cache_answer":
            out.add(f"cache_answer:{a.parameters.get('prompt')}")
        elif a.name == "mark_duplicates":
            for pair in a.parameters.get("pairs", []):
                out.add(f"mark_duplicates:{pair.get('duplicate_id')}>{pair.get('canonical_id')}")
        elif a.name == "retry_failed_workflow":
            out.add(f"retry_failed_workflow:{a.parameters.get('instance_id')}")
        elif a.name == "discover_concepts":
            out.add(f"discover_concepts:{a.parameters.get('modality')}")
    return out


def _blocked(uow: UnitOfWork, tenant_id: str) -> set[str]:
    """What a waiting or applied action already covers: ``mark_duplicates`` while one is in
    flight, ``cache_answer:{prompt}`` per prompt, ``discover_concepts:{modality}``."""
    out: set[str] = set()
    in_flight = [ActionStatus.AWAITING_APPROVAL, ActionStatus.APPROVED]
    if uow.autonomy.actions(tenant_id, name="mark_duplicates", statuses=in_flight, limit=1):
        out.add("mark_duplicates")
    for action in uow.autonomy.actions(tenant_id, name="cache_answer", statuses=BLOCKING):
        out.add(f"cache_answer:{action.parameters.get('prompt')}")
    for action in uow.autonomy.actions(tenant_id, name="discover_concepts", statuses=BLOCKING):
        out.add(f"discover_concepts:{action.parameters.get('modality')}")
    return out
