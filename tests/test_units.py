"""Small pure pieces: media types, modalities, scopes, ranges, cursors, settings."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path

import pytest

from hartonomous.api.ranges import parse_range
from hartonomous.domain.atoms import Atom, Modality, modality_for, normalize_media_type
from hartonomous.domain.tenants import Scope, hash_api_key, new_api_key
from hartonomous.errors import InvalidInput, RangeNotSatisfiable
from hartonomous.services.atoms import decode_cursor, encode_cursor, parse_metadata
from hartonomous.settings import Settings

DOCS = Path(__file__).resolve().parent.parent / "docs"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (None, "application/octet-stream"),
        ("", "application/octet-stream"),
        ("Text/Plain; charset=UTF-8", "text/plain"),
        ("application/vnd.api+json", "application/vnd.api+json"),
    ],
)
def test_media_types_are_normalized(raw, expected):
    assert normalize_media_type(raw) == expected


@pytest.mark.parametrize("raw", ["text", "text/", "/plain", "a b/c", "text/plain/x"])
def test_malformed_media_types_are_refused(raw):
    with pytest.raises(ValueError):
        normalize_media_type(raw)


@pytest.mark.parametrize(
    ("media_type", "modality"),
    [
        ("text/markdown", Modality.TEXT),
        ("application/json", Modality.TEXT),
        ("application/ld+json", Modality.TEXT),
        ("text/x-python", Modality.CODE),
        ("application/pdf", Modality.DOCUMENT),
        ("image/png", Modality.IMAGE),
        ("audio/wav", Modality.AUDIO),
        ("video/mp4", Modality.VIDEO),
        ("application/x-gguf", Modality.MODEL),
        ("application/zip", Modality.BINARY),
    ],
)
def test_modality_follows_the_media_type(media_type, modality):
    assert modality_for(media_type) is modality


def test_scopes_are_ordered():
    assert Scope.ADMIN.allows(Scope.WRITE) and Scope.WRITE.allows(Scope.READ)
    assert not Scope.READ.allows(Scope.WRITE) and not Scope.WRITE.allows(Scope.ADMIN)


def test_keys_are_random_and_stored_as_hashes():
    a, b = new_api_key(), new_api_key()
    assert a != b and a.startswith("hk_")
    assert re.fullmatch(r"[0-9a-f]{64}", hash_api_key(a))
    assert hash_api_key(a) != hash_api_key(b)


@pytest.mark.parametrize(
    ("header", "size", "expected"),
    [
        (None, 10, None),
        ("bytes=0-0", 10, (0, 1)),
        ("bytes=3-", 10, (3, 10)),
        ("bytes=-4", 10, (6, 10)),
        ("bytes=-40", 10, (0, 10)),
        ("bytes=5-2", 10, None),  # invalid: ignored
        ("bytes=1-2,5-6", 10, None),  # multiple: ignored
        ("pages=1-2", 10, None),
    ],
)
def test_parse_range(header, size, expected):
    assert parse_range(header, size) == expected


@pytest.mark.parametrize(("header", "size"), [("bytes=10-", 10), ("bytes=-0", 10), ("bytes=0-", 0)])
def test_unsatisfiable_ranges(header, size):
    with pytest.raises(RangeNotSatisfiable) as info:
        parse_range(header, size)
    assert info.value.headers["Content-Range"] == f"bytes */{size}"


def test_cursor_round_trips_and_refuses_garbage():
    atom = Atom(
        id="abc",
        tenant_id="t",
        sha256="0" * 64,
        size=1,
        media_type="text/plain",
        modality=Modality.TEXT,
        created_at=datetime(2026, 1, 2, 3, 4, 5, 678, tzinfo=UTC),
    )
    position = decode_cursor(encode_cursor(atom))
    assert (position.created_at, position.id) == (atom.created_at, "abc")
    for bad in ("!!", "eyJ4IjogMX0", "W10"):
        with pytest.raises(InvalidInput):
            decode_cursor(bad)


def test_metadata_must_be_a_small_json_object():
    assert parse_metadata('{"a": [1]}') == {"a": [1]}
    assert parse_metadata(None) == {}
    for bad in ("[]", "1", "{", '"x"', "{" + '"k": "' + "v" * 20000 + '"}'):
        with pytest.raises(InvalidInput):
            parse_metadata(bad)


def test_azure_blobs_need_credentials():
    with pytest.raises(ValueError, match="AZURE_STORAGE"):
        Settings(blob_backend="azure")


def test_every_setting_is_documented():
    text = (DOCS / "configuration.md").read_text()
    for name in Settings.model_fields:
        assert f"`HARTONOMOUS_{name.upper()}`" in text, f"document HARTONOMOUS_{name.upper()}"
