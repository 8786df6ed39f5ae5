"""Agents' names and versions over the real app and a real SQLite store: compilation into
content-addressed versions, reading, listing, retiring, pinning, and the bad input each
part of a spec can carry. ``compile_spec`` itself is checked as the pure function it is."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from knowledge_corpus import Corpus, add_document, unit

from conftest import TenantKeys
from hartonomous.agents.compiler import compile_spec
from hartonomous.agents.names import step_credits
from hartonomous.agents.spec import AgentSpecIn
from hartonomous.autonomy.policy import ActionRule, Policy
from hartonomous.bootstrap import Platform
from hartonomous.errors import Gone, NotFound, UnprocessableContent
from hartonomous.inference.types import BUILTIN_MODEL, ModelRef
from hartonomous.models.store import ModelRecord
from hartonomous.services.clock import new_id, utcnow

PROBLEM = "application/problem+json"
MODEL = ModelRef("m-1", "a" * 64, "tiny")


def spec(**over: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "name": "helper",
        "description": "answers from the handbook",
        "model_id": BUILTIN_MODEL,
        "instructions": "Answer briefly and cite your sources.",
        "knowledge": {"metadata": {"team": "red"}},
        "tools": [{"name": "search"}, {"name": "save_note", "requires_approval": True}],
        "constitution": [
            {"type": "require_approval", "tool": "read_atom"},
            {"type": "refuse_pattern", "preset": "email"},
            {"type": "max_steps", "steps": 4},
        ],
        "budget": {"credits_per_run": 2.0, "max_steps": 6, "max_duration_s": 120},
    }
    body.update(over)
    return body


def post(client: TestClient, who: TenantKeys, body: dict[str, Any]) -> Any:
    return client.post("/v1/agents", json=body, headers=who.auth())


def problem(response: Any, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM
    body: dict[str, Any] = response.json()
    return body


def add_model(platform: Platform, tenant_id: str, status: str, sha: str = "b" * 64) -> str:
    now = utcnow()
    record = ModelRecord(
        id=new_id(), tenant_id=tenant_id, name="tenant model", status=status, error=None,
        instance_id=None, sha256=sha, file_size=10, source_atom_id=None, parent_id=None,
        layers=None, architecture="gemma3", parameter_count=1, quantization=None,
        context_length=None, vocab_size=None, block_count=None, chat_template=None,
        license=None, new_bytes=None, info=None, profile_atom_id=None, created_at=now,
        updated_at=now,
    )  # fmt: skip
    with platform.uow_factory(write=True, tenant_id=tenant_id) as uow:
        uow.models.add(record)
        uow.commit()
    return record.id


# -- compile_spec, the pure function ----------------------------------------------------------


def test_compiling_is_deterministic_and_every_part_changes_the_version() -> None:
    base = AgentSpecIn.model_validate(spec())
    first = compile_spec(base, model=MODEL, snapshot=7, policy=Policy())
    again = compile_spec(
        AgentSpecIn.model_validate(spec()), model=MODEL, snapshot=7, policy=Policy()
    )
    assert first.version_id == again.version_id and first.canonical() == again.canonical()
    assert len(first.version_id) == 64
    # The tools are sorted; flags from the spec and from require_approval rules are folded in.
    assert [(t.name, t.requires_approval, t.scope) for t in first.tools] == [
        ("save_note", True, "write"), ("search", False, "read"),
    ]  # fmt: skip
    assert first.constitution[1] == {"type": "refuse_pattern", "preset": "email",
                                     "on_violation": "end"}  # fmt: skip
    assert first.filters == {"metadata": {"team": "red"}}
    changed = {
        "model bytes": compile_spec(base, model=replace(MODEL, sha256="c" * 64), snapshot=7,
                                    policy=Policy()),
        "snapshot": compile_spec(base, model=MODEL, snapshot=8, policy=Policy()),
    }  # fmt: skip
    changes: dict[str, dict[str, Any]] = {
        "instructions": {"instructions": "Answer at length."},
        "name": {"name": "helper-2"},
        "knowledge": {"knowledge": {"metadata": {"team": "blue"}}},
        "tools": {"tools": [{"name": "search"}]},
        "a rule": {"constitution": [{"type": "max_steps", "steps": 3}]},
        "rule order": {"constitution": list(reversed(spec()["constitution"]))},
        "budget": {"budget": {"credits_per_run": 3.0}},
        "output schema": {"output_schema": {"type": "object"}},
        "temperature": {"temperature": 0.5},
    }
    for label, over in changes.items():
        changed[label] = compile_spec(
            AgentSpecIn.model_validate(spec(**over)), model=MODEL, snapshot=7, policy=Policy()
        )
    ids = {label: c.version_id for label, c in changed.items()}
    assert first.version_id not in ids.values(), ids
    assert len(set(ids.values())) == len(ids), ids


def test_compile_spec_refuses_what_cannot_run() -> None:
    def refused(policy: Policy = Policy(), **over: Any) -> UnprocessableContent:
        with pytest.raises(UnprocessableContent) as caught:
            compile_spec(AgentSpecIn.model_validate(spec(**over)), model=MODEL, snapshot=0,
                         policy=policy)  # fmt: skip
        return caught.value

    assert refused(tools=[{"name": "fly"}]).extensions["tool"] == "fly"
    assert "loop action" in refused(tools=[{"name": "mark_duplicates"}]).detail
    forbid = Policy(actions={"search": ActionRule(allowed=False)})
    error = refused(forbid)
    assert error.extensions == {"tool": "search", "rule": "policy:search.allowed=false"}
    contradiction = refused(constitution=[{"type": "forbid_tool", "tool": "search"}])
    assert contradiction.extensions["rule"] == "constitution[0]"
    assert (
        refused(constitution=[{"type": "require_approval", "tool": "teleport"}]).extensions["tool"]
        == "teleport"
    )
    # The smaller of the budget and a max_credits rule must pay for one step.
    small = refused(constitution=[{"type": "max_credits", "credits": 0.01}])
    assert small.extensions["step_credits"] == step_credits(192)
    # A number canonical JSON cannot carry exactly is refused, never a 500.
    assert "canonical JSON" in refused(knowledge={"metadata": {"n": 2**60}}).detail


# -- the API ----------------------------------------------------------------------------------


def test_create_is_idempotent_and_a_change_is_a_new_version(
    client: TestClient, alice: TenantKeys
) -> None:
    first = post(client, alice, spec())
    assert first.status_code == 201, first.text
    made = first.json()
    vid = made["version_id"]
    assert first.headers["location"] == f"/v1/agents/{vid}"
    assert made["status"] == "active" and made["latest_version"] == vid and made["current"]
    assert made["pinned_version"] is None and made["compile_ms"] > 0
    assert made["spec"]["model"]["id"] == BUILTIN_MODEL and len(made["model_sha256"]) == 64
    assert made["spec"]["format"] == "hartonomous.agent/1"
    same = post(client, alice, spec())
    assert same.status_code == 200, same.text
    assert same.json()["version_id"] == vid and same.json()["created_at"] == made["created_at"]
    changed = post(client, alice, spec(instructions="Be terse."))
    assert changed.status_code == 201
    v2 = changed.json()["version_id"]
    assert v2 != vid
    # By name: the latest; by version id: that version, not current any more.
    by_name = client.get("/v1/agents/helper", headers=alice.auth("read")).json()
    assert by_name["version_id"] == v2 and by_name["spec"]["instructions"] == "Be terse."
    old = client.get(f"/v1/agents/{vid}", headers=alice.auth("read")).json()
    assert old["version_id"] == vid and old["latest_version"] == v2 and not old["current"]
    versions = client.get("/v1/agents/helper/versions", headers=alice.auth("read")).json()
    assert [v["version_id"] for v in versions["items"]] == [v2, vid]
    page = client.get("/v1/agents/helper/versions?limit=1", headers=alice.auth("read")).json()
    assert [v["version_id"] for v in page["items"]] == [v2] and page["next_cursor"]
    rest = client.get(
        "/v1/agents/helper/versions",
        params={"limit": 1, "cursor": page["next_cursor"]},
        headers=alice.auth("read"),
    ).json()
    assert [v["version_id"] for v in rest["items"]] == [vid] and rest["next_cursor"] is None
    # A read key may read, not compile.
    assert post(client, replace(alice, write=alice.read), spec()).status_code == 403


def test_retire_list_and_reactivate(
    client: TestClient, platform: Platform, alice: TenantKeys
) -> None:
    for name in ("alpha", "beta", "gamma"):
        assert post(client, alice, spec(name=name)).status_code == 201
    read = alice.auth("read")
    page = client.get("/v1/agents?limit=2", headers=read).json()
    assert [a["name"] for a in page["items"]] == ["alpha", "beta"]
    rest = client.get("/v1/agents", params={"cursor": page["next_cursor"]}, headers=read).json()
    assert [a["name"] for a in rest["items"]] == ["gamma"] and rest["next_cursor"] is None
    assert client.delete("/v1/agents/beta", headers=alice.auth()).status_code == 204
    problem(client.delete("/v1/agents/beta", headers=alice.auth()), 404)  # none active
    names = [a["name"] for a in client.get("/v1/agents", headers=read).json()["items"]]
    assert names == ["alpha", "gamma"]
    every = client.get("/v1/agents?include_retired=true", headers=read).json()["items"]
    assert [(a["name"], a["status"]) for a in every] == [
        ("alpha", "active"), ("beta", "retired"), ("gamma", "active"),
    ]  # fmt: skip
    shown = client.get("/v1/agents/beta", headers=read).json()
    assert shown["status"] == "retired" and shown["retired_at"]
    assert client.get("/v1/agents/beta/versions", headers=read).json()["items"]
    # What a run would ask: 410 for the retired name (and its versions), 404 for none.
    with pytest.raises(Gone):
        platform.agents.current_version(alice.id, "beta")
    with pytest.raises(Gone):
        platform.agents.current_version(alice.id, shown["version_id"])
    with pytest.raises(NotFound):
        platform.agents.current_version(alice.id, "delta")
    version, agent = platform.agents.current_version(alice.id, "alpha")
    assert agent is not None and version.id == agent.latest_version
    # Compiling it again re-activates it (the same spec: the same version, 200).
    again = post(client, alice, spec(name="beta"))
    assert again.status_code == 200 and again.json()["status"] == "active"
    assert again.json()["retired_at"] is None
    assert platform.agents.current_version(alice.id, "beta")[0].id == shown["version_id"]


def test_pin_and_unpin(client: TestClient, alice: TenantKeys) -> None:
    v1 = post(client, alice, spec()).json()["version_id"]
    v2 = post(client, alice, spec(instructions="v2")).json()["version_id"]
    other = post(client, alice, spec(name="other")).json()["version_id"]
    pinned = client.put("/v1/agents/helper/pin", json={"version_id": v1}, headers=alice.auth())
    assert pinned.status_code == 200, pinned.text
    assert pinned.json()["version_id"] == v1 and pinned.json()["pinned_version"] == v1
    # The pin holds over a later compilation; the name runs the pinned version.
    v3 = post(client, alice, spec(instructions="v3")).json()["version_id"]
    shown = client.get("/v1/agents/helper", headers=alice.auth("read")).json()
    assert (shown["version_id"], shown["latest_version"], shown["current"]) == (v1, v3, True)
    wrong = client.put("/v1/agents/helper/pin", json={"version_id": other}, headers=alice.auth())
    assert problem(wrong, 422)["version_id"] == other
    problem(client.put("/v1/agents/helper/pin", json={"version_id": "x"}, headers=alice.auth()),
            422)  # fmt: skip
    unpinned = client.delete("/v1/agents/helper/pin", headers=alice.auth())
    assert unpinned.status_code == 200
    assert unpinned.json()["version_id"] == v3 and unpinned.json()["pinned_version"] is None
    assert v2 not in (v1, v3)
    read_only = client.put(
        "/v1/agents/helper/pin", json={"version_id": v1}, headers=alice.auth("read")
    )
    assert read_only.status_code == 403


def test_another_tenants_agent_is_not_found(
    client: TestClient, alice: TenantKeys, bob: TenantKeys
) -> None:
    vid = post(client, alice, spec()).json()["version_id"]
    for path in ("/v1/agents/helper", f"/v1/agents/{vid}", "/v1/agents/helper/versions"):
        problem(client.get(path, headers=bob.auth("read")), 404)
    problem(client.delete("/v1/agents/helper", headers=bob.auth()), 404)
    problem(client.put("/v1/agents/helper/pin", json={"version_id": vid}, headers=bob.auth()),
            404)  # fmt: skip
    problem(client.delete("/v1/agents/helper/pin", headers=bob.auth()), 404)
    assert client.get("/v1/agents", headers=bob.auth("read")).json()["items"] == []
    # Bob compiling the same spec gets his own version row (same id: same content).
    mine = post(client, bob, spec())
    assert mine.status_code == 201 and mine.json()["version_id"] == vid
    assert client.get("/v1/agents/helper", headers=alice.auth("read")).status_code == 200


def test_models_unknown_not_ready_and_ready(
    client: TestClient, platform: Platform, alice: TenantKeys, bob: TenantKeys
) -> None:
    problem(post(client, alice, spec(model_id="no-such-model")), 404)
    ingesting = add_model(platform, alice.id, "ingesting")
    problem(post(client, alice, spec(model_id=ingesting)), 409)
    ready = add_model(platform, alice.id, "ready")
    made = post(client, alice, spec(model_id=ready))
    assert made.status_code == 201 and made.json()["model_sha256"] == "b" * 64
    problem(post(client, bob, spec(model_id=ready)), 404)  # Alice's model
    # Other bytes under another id: another version.
    other = add_model(platform, alice.id, "ready", sha="c" * 64)
    assert (
        post(client, alice, spec(model_id=other)).json()["version_id"] != made.json()["version_id"]
    )


def test_bad_specs_are_422_naming_what_is_wrong(client: TestClient, alice: TenantKeys) -> None:
    unknown = problem(post(client, alice, spec(tools=[{"name": "launch_rockets"}])), 422)
    assert unknown["tool"] == "launch_rockets" and "launch_rockets" in unknown["detail"]
    loop = problem(post(client, alice, spec(tools=[{"name": "cache_answer"}])), 422)
    assert loop["tool"] == "cache_answer" and "loop action" in loop["detail"]
    contradiction = spec(constitution=[{"type": "forbid_tool", "tool": "save_note"}])
    assert problem(post(client, alice, contradiction), 422)["tool"] == "save_note"
    typo = spec(constitution=[{"type": "forbid_tool", "tool": "sav_note"}])
    assert problem(post(client, alice, typo), 422)["tool"] == "sav_note"
    for rule in (
        {"type": "no_such_rule"},
        {"type": "max_steps", "steps": 0},
        {"type": "max_steps", "steps": 3, "extra": 1},
        {"type": "refuse_pattern"},  # neither preset nor pattern
        {"type": "refuse_pattern", "pattern": "(a", "preset": None},  # not RE2
        {"type": "refuse_pattern", "pattern": "(?=lookahead)"},  # RE2 has no lookaround
        {"type": "output_schema", "schema": {"type": "no-such-type"}},
    ):
        problem(post(client, alice, spec(constitution=[rule])), 422)
    problem(post(client, alice, spec(output_schema={"type": 12})), 422)
    problem(post(client, alice, spec(output_schema={"maximum": 2**60})), 422)
    problem(post(client, alice, spec(name="runs")), 422)
    problem(post(client, alice, spec(name="Has Spaces")), 422)
    problem(post(client, alice, spec(tools=[{"name": "search"}, {"name": "search"}])), 422)
    small = problem(post(client, alice, spec(budget={"credits_per_run": 0.1})), 422)
    assert "budget too small to start" in small["detail"]
    assert small["step_credits"] == step_credits(192)
    assert client.get("/v1/agents", headers=alice.auth("read")).json()["items"] == []


def test_a_tool_the_policy_forbids_cannot_be_compiled_in(
    client: TestClient, alice: TenantKeys
) -> None:
    policy = {"actions": {"save_note": {"allowed": False}}}
    assert client.put("/v1/policy", json=policy, headers=alice.auth("admin")).status_code == 200
    refused = problem(post(client, alice, spec()), 422)
    assert refused["tool"] == "save_note"
    assert refused["rule"] == "policy:save_note.allowed=false"
    assert "the tenant policy forbids tool 'save_note'" in refused["detail"]
    assert post(client, alice, spec(tools=[{"name": "search"}])).status_code == 201


def test_the_knowledge_snapshot_is_frozen_at_compilation(
    client: TestClient, platform: Platform, alice: TenantKeys
) -> None:
    corpus = Corpus(alice.id)
    vector = unit([1, 0, 0, 0, 0, 0, 0, 0])
    add_document(platform.uow_factory, corpus, "one", ["first passage"], [vector])
    first = post(client, alice, spec()).json()
    assert first["snapshot"] > 0 and first["spec"]["snapshot"] == first["snapshot"]
    assert post(client, alice, spec()).json()["version_id"] == first["version_id"]
    add_document(platform.uow_factory, corpus, "two", ["second passage", "third"],
                 [vector, unit(list(np.arange(1, 9)))])  # fmt: skip
    second = post(client, alice, spec())
    assert second.status_code == 201
    assert second.json()["snapshot"] > first["snapshot"]
    assert second.json()["version_id"] != first["version_id"]
