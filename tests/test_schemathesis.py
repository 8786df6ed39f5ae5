"""schemathesis against the app's own OpenAPI: every operation, every built-in check, positive
and negative data, over the real app on a real SQLite store with a real key (given to
schemathesis as the schema's bearer scheme, so negative cases may leave it out).

Payments go to a real localstripe. What is not real, and why: the completion engine is a
stub (``EchoInference``): loading and running llama.cpp for each of hundreds of generated
generation requests would take the whole budget many times over; tests/test_generation.py
runs the real model. Search, embeddings (MiniLM), receipts and usage behind
``/v1/generate`` are the real ones.

The fuzz tenant starts with the stdlib's email docstrings ingested (``seed_text``), so a
concept discovery has chunks to cluster.

Exclusions, each with its reason below: ``SEMANTIC_REFUSALS`` (schema-valid data refused for
what a schema cannot state, e.g. bytes that are not a GGUF) and ``LENIENT`` (schema-violating
data rightly accepted). Only the positive-, resp. negative-data check learns of them; the
5xx, status, content type, header and response schema checks see every case.

Bounded: ``EXAMPLES`` cases per operation and mode, no shrinking (a failure is reported as a
reproducible request as it is); about 50 s on two busy cores.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from concept_corpus import family_documents
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis.checks import CHECKS, load_all_checks
from schemathesis.config import SchemathesisConfig
from schemathesis.core.result import Err, Ok
from schemathesis.generation.modes import GenerationMode

from functions import indexed_app, runtime
from hartonomous.api.app import create_app
from hartonomous.bootstrap import Platform, bootstrap
from hartonomous.inference.types import Completion, CompletionRequest, ModelRef
from hartonomous.settings import Settings

EXAMPLES = 25
load_all_checks()
ALL_CHECKS = CHECKS.get_all()


class EchoInference:
    """The inference port without a model: a few words back, at once."""

    def complete(self, model: ModelRef, request: CompletionRequest) -> Completion:
        text = " ".join(request.prompt.split()[: min(request.max_tokens, 8)])
        return Completion(text, "stop", len(request.prompt.split()), len(text.split()) + 1)

    def stream(self, model: ModelRef, request: CompletionRequest) -> Iterator[str | Completion]:
        completion = self.complete(model, request)
        yield completion.text
        yield completion


def without_lifespan(app: Any) -> Any:
    """The app for schemathesis, whose client would start the lifespan (the workflow host)
    and keep it for the rest of the process; the fixture runs the real one instead."""

    async def asgi(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "lifespan":
            await app(scope, receive, send)
            return
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return

    return asgi


@pytest.fixture(scope="module")
def served(
    tmp_path_factory: pytest.TempPathFactory, embedder: Any, localstripe: str
) -> Iterator[tuple[Any, str]]:
    """The app as `hartonomous serve` runs it (workflow host included, payments through a
    real localstripe), and an admin key."""
    from fixtures_localstripe import API_KEY

    from hartonomous.services import tenants

    folder: Path = tmp_path_factory.mktemp("schemathesis")
    platform: Platform = bootstrap(
        Settings(
            data_dir=folder / "data",
            max_upload_bytes=256 * 1024,
            stripe_api_key=API_KEY,
            stripe_webhook_secret="whsec_fuzz",
            stripe_api_base=localstripe,
            stripe_flavor="localstripe",
        ),
        functions=indexed_app().get_functions(),
        embedder=embedder,
        inference=EchoInference(),
    )
    runtime.use(platform)
    embedder.embed(["warm up"])  # the first query would pay for loading MiniLM
    fuzz, admin = tenants.create_tenant(platform.uow_factory, name="fuzz")
    # Hundreds of cases in seconds: the fuzz tenant's plan is the largest there is, so it is
    # never throttled (429 and its headers are tested in test_admission_api.py).
    platform.admission.plans.set(fuzz.id, {"requests_per_second": 100_000, "burst": 1_000_000,
                                           "concurrent_generations": 10_000,
                                           "tokens_per_minute": 100_000_000})  # fmt: skip
    app = create_app(platform)
    try:
        with TestClient(app) as client:  # the lifespan: the workflow host runs what is started
            seed_text(client, admin.secret)
            yield without_lifespan(app), admin.secret
    finally:
        runtime.use(None)
        platform.close()


def seed_text(client: TestClient, key: str) -> None:
    """Text enough for a concept discovery (5 chunks a concept), ingested before the fuzz, so
    POST /v1/concepts/discover is fuzzed past its 422 too: its 202, and the orchestration
    running beside the other cases (then a 409 while it runs)."""
    auth = {"Authorization": f"Bearer {key}"}
    started = []
    for _, _, text in family_documents(["email"]):
        headers = {**auth, "Content-Type": "text/markdown"}
        r = client.post("/v1/ingestions", content=text.encode(), headers=headers)
        assert r.status_code == 202, r.text
        started.append(r.json()["status_url"])
    deadline = time.monotonic() + 120
    for url in started:
        while (status := client.get(url, headers=auth).json())["runtimeStatus"] not in (
            "Completed", "Failed", "Terminated",
        ):  # fmt: skip
            assert time.monotonic() < deadline, status
            time.sleep(0.05)
        assert status["runtimeStatus"] == "Completed", status


# Where valid-looking data is refused for what a schema cannot state, the positive-data check
# also accepts that status; every other check (5xx, schema, headers, negative data) still runs.
SEMANTIC_REFUSALS: list[tuple[str, str, str, str]] = [
    ("POST", "/v1/models", "422", "bytes that are not a GGUF file (a magic number)"),
    ("GET", "/v1/atoms", "400", "a cursor this API did not return (it is opaque)"),
    ("GET", "/v1/models", "400", "a cursor this API did not return (it is opaque)"),
    ("GET", "/v1/autonomy/runs", "400", "a cursor this API did not return (it is opaque)"),
    ("GET", "/v1/approvals", "400", "a cursor this API did not return (it is opaque)"),
    ("GET", "/v1/autonomy/dead-letters", "400", "a cursor this API did not return (it is opaque)"),
    ("POST", "/v1/uploads", "422", "purpose document with a media type ingestion cannot parse"),
    ("GET", "/v1/usage", "400", "from after to (each valid alone)"),
    ("GET", "/v1/agents", "400", "a cursor this API did not return (it is opaque)"),
    ("GET", "/v1/agents/runs", "400", "a cursor this API did not return (it is opaque)"),
    ("GET", "/v1/keys", "400", "a cursor this API did not return (it is opaque)"),
    ("GET", "/v1/billing/ledger", "400", "a cursor this API did not return (it is opaque)"),
    ("GET", "/v1/concepts", "400", "a cursor this API did not return (it is opaque)"),
    (
        "POST",
        "/v1/concepts/discover",
        "422",
        "fewer chunks of the modality than k concepts need (5 each), or modality concept",
    ),
    ("POST", "/v1/webhooks/stripe", "400", "a signature Stripe did not make (an HMAC of the body)"),
    (
        "POST",
        "/v1/agents",
        "422",
        "a tool or rule naming what the registry lacks, a budget "
        "under one step's estimate, a schema RE2 cannot run",
    ),
]
# Where schema-violating data is rightly accepted, the negative-data check accepts that status.
LENIENT: list[tuple[str, str, str, str]] = [
    ("POST", "/v1/ingestions", "202", "a text/* body is text whatever it spells: '1.5' too"),
    # A multipart `metadata` part holding an empty array is encoded as no part at all, and
    # absent metadata is valid: the negative case the generator meant never reaches us.
    ("POST", "/v1/atoms", "200", "metadata [] is sent as no part (absent metadata is valid)"),
    ("POST", "/v1/atoms", "201", "metadata [] is sent as no part (absent metadata is valid)"),
]
POSITIVE_OK = ["2xx", "3xx", "401", "403", "404", "409", "429"]
# schemathesis' own list, and 413: a body or size past a limit is refused as too large.
NEGATIVE_OK = ["400", "401", "403", "404", "405", "406", "409", "415", "422", "428", "429"]


def _lenient_by_operation() -> dict[str, list[str]]:
    by: dict[str, list[str]] = {}
    for method, path, status, _ in LENIENT:
        by.setdefault(f"{method} {path}", []).append(status)
    return by


def _config(key: str) -> SchemathesisConfig:
    return SchemathesisConfig.from_dict(
        {
            # As the schema's security scheme, so negative cases may leave it out.
            "auth": {"openapi": {"HTTPBearer": {"bearer": key}}},
            "checks": {"negative_data_rejection": {"expected-statuses": [*NEGATIVE_OK, "413"]}},
            "operations": [
                {
                    "include-name": f"{method} {path}",  # method and path together
                    "checks": {
                        "positive_data_acceptance": {"expected-statuses": [*POSITIVE_OK, status]}
                    },
                }
                for method, path, status, _ in SEMANTIC_REFUSALS
            ]
            + [
                {
                    "include-name": name,
                    "checks": {
                        "negative_data_rejection": {
                            "expected-statuses": [*NEGATIVE_OK, "413", *statuses]
                        }
                    },
                }
                # One entry per operation with all its statuses: a second entry for the same
                # operation replaced the first (POST /v1/atoms' 201 was lost to its 200).
                for name, statuses in _lenient_by_operation().items()
            ],
        }
    )


def _describe(exc: BaseException) -> str:
    if isinstance(exc, BaseExceptionGroup):
        return f"{exc}\n" + "\n".join(_describe(e) for e in exc.exceptions)
    return str(exc)


def test_the_api_keeps_its_schema(served: tuple[Any, str]) -> None:
    """Every operation in both modes; every failure is collected, then all are reported."""
    app, key = served
    api = schemathesis.openapi.from_asgi("/openapi.json", app, config=_config(key))
    failures: list[str] = []
    results = list(api.get_all_operations())
    unreadable = [result.err() for result in results if isinstance(result, Err)]
    assert not unreadable, unreadable  # an operation schemathesis cannot read is a failure too
    operations = [result.ok() for result in results if isinstance(result, Ok)]
    assert len(operations) > 20
    for operation in operations:
        for mode in GenerationMode:

            @given(case=operation.as_strategy(generation_mode=mode))
            @settings(
                max_examples=EXAMPLES,
                deadline=None,
                phases=[Phase.explicit, Phase.generate],
                suppress_health_check=list(HealthCheck),
                database=None,
            )
            def run(case: Any) -> None:
                case.call_and_validate(checks=ALL_CHECKS, timeout=60)

            try:
                run()
            except Unsatisfiable:
                assert mode is GenerationMode.NEGATIVE  # nothing to get wrong (no input)
            except (Exception, BaseExceptionGroup) as exc:  # each names its request (curl)
                failures.append(f"{operation.label} [{mode.value}]: {_describe(exc)}")
    assert not failures, f"{len(failures)} failing:\n\n" + "\n\n".join(failures)
    with TestClient(app) as client:  # its 202 was fuzzed too: a discovery started
        runs = client.get("/v1/concepts/runs", headers={"Authorization": f"Bearer {key}"})
    assert runs.json(), "POST /v1/concepts/discover met only refusals: seed more text"
