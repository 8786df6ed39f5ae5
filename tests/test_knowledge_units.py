"""Parsing and chunking, with the real MiniLM tokenizer."""

from __future__ import annotations

import inspect
import itertools
import json

import pytest

from hartonomous.knowledge.chunking import ChunkingPolicy, chunk_text
from hartonomous.knowledge.embeddings import HuggingFaceTokenizer, minilm_path
from hartonomous.knowledge.parsing import UnparseableDocument, extract_text, is_supported


@pytest.fixture(scope="module")
def tok() -> HuggingFaceTokenizer:
    return HuggingFaceTokenizer(minilm_path() / "tokenizer.json")


def minimal_pdf(text: str) -> bytes:
    """A one-page PDF with a text object, byte offsets computed (no writer library needed)."""
    stream = f"BT /F1 12 Tf 72 720 Td ({text}) Tj ET".encode()
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R "
        b"/Resources << /Font << /F1 5 0 R >> >> >>",
        b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    out, offsets = bytearray(b"%PDF-1.4\n"), []
    for i, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % i + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % o for o in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (
        len(objects) + 1,
        xref,
    )
    return bytes(out)


def test_text_markdown_and_code():
    assert extract_text(b"# Title\n\nBody", "text/markdown") == "# Title\n\nBody"
    assert "def f" in extract_text(b"def f():\n    return 1\n", "application/octet-stream", "m.py")


def test_html_keeps_text_and_drops_scripts():
    html = (
        b"<html><head><style>p{}</style><script>evil()</script></head><body><h1>Hi</h1>"
        b"<p>First &amp; second.</p><ul><li>one</li><li>two</li></ul></body></html>"
    )
    text = extract_text(html, "text/html")
    assert "evil" not in text and "p{}" not in text
    assert "Hi" in text and "First & second." in text and "one" in text


def test_json_is_pretty_printed():
    text = extract_text(b'{"b": [1, 2], "a": "x"}', "application/json")
    assert json.loads(text) == {"b": [1, 2], "a": "x"} and "\n" in text


def test_pdf_text_is_extracted():
    assert "Durable replay works" in extract_text(
        minimal_pdf("Durable replay works"), "application/pdf"
    )


@pytest.mark.parametrize(
    ("data", "media_type", "message"),
    [
        (b"\x00\x01binary", "text/plain", "binary"),
        (b"\xff\xfe\xfa", "text/plain", "not valid UTF-8"),
        (b"{nope", "application/json", "JSON document is invalid"),
        (b"%PDF-1.4 garbage", "application/pdf", "PDF"),
        (b"   \n ", "text/plain", "no text"),
        (b"GIF89a", "image/gif", "cannot be ingested"),
    ],
)
def test_unparseable_documents_say_why(data, media_type, message):
    with pytest.raises(UnparseableDocument, match=message) as info:
        extract_text(data, media_type)
    assert info.value.status == 422


def test_is_supported_uses_type_or_extension():
    assert is_supported("text/plain") and is_supported("application/octet-stream", "x.rs")
    assert not is_supported("image/png", "photo.png")


def corpus() -> str:
    modules = [json, inspect, pytest]
    return (
        "\n\n".join(inspect.getdoc(m) or "" for m in modules)
        + "\n\n"
        + "\n\n".join(
            inspect.getdoc(f) or "" for f in (inspect.signature, json.dumps, json.loads, chunk_text)
        )
    )


def test_chunks_are_exact_spans_within_the_token_budget(tok):
    text = corpus()
    policy = ChunkingPolicy()
    chunks = chunk_text(text, tok, policy)
    assert len(chunks) > 3
    for i, c in enumerate(chunks):
        assert c.ordinal == i and text[c.start : c.end] == c.text
        assert tok.count([c.text])[0] <= policy.max_tokens + 8  # segment sums vs whole text
    covered = set()
    for c in chunks:
        covered |= set(range(c.start, c.end))
    assert all(i in covered for i, ch in enumerate(text) if not ch.isspace())


def test_long_paragraphs_are_split_by_sentences_then_tokens(tok):
    text = " ".join(["word"] * 2000)  # one paragraph, one "sentence", far over the budget
    chunks = chunk_text(text, tok, ChunkingPolicy())
    assert len(chunks) >= 7 and all(c.tokens <= 256 for c in chunks)


def test_overlap_repeats_the_previous_short_segment(tok):
    paragraphs = [f"Paragraph {i}: " + "alpha beta gamma. " * 6 for i in range(40)]
    chunks = chunk_text("\n\n".join(paragraphs), tok, ChunkingPolicy())
    overlapping = [b for a, b in itertools.pairwise(chunks) if b.start < a.end]
    assert overlapping, "consecutive chunks should share their boundary segment"


def test_an_edit_moves_only_the_boundaries_around_it(tok):
    text = corpus()
    before = {c.text for c in chunk_text(text, tok)}
    edited = text.replace("JSON", "JSON (JavaScript Object Notation)", 1)
    after = chunk_text(edited, tok)
    reused = sum(1 for c in after if c.text in before)
    assert reused >= len(after) - 2, (reused, len(after))


def test_user_words_never_become_fts5_syntax():
    from hartonomous.knowledge.keyword_sqlite import fts_query
    from hartonomous.knowledge.store import query_words

    words = query_words('Mars OR "Venus" NEAR(mars) col:x* mars')
    assert words == ["mars", "or", "venus", "near", "col", "x"]
    assert fts_query(words) == '"mars" OR "or" OR "venus" OR "near" OR "col" OR "x"'
    assert fts_query(query_words("?! --")) is None


def test_query_term_tables_last_the_connection_or_are_made_per_search(tmp_path):
    """The bootstrap has each SQLite connection create the query-term tables once; an
    engine made without that setup still searches, creating them inside each search."""
    from hartonomous.knowledge.keyword_sqlite import QUERY_TERM_TABLES, Fts5KeywordIndex
    from hartonomous.knowledge.store import KnowledgeRepository
    from hartonomous.store import migrate
    from hartonomous.store.engine import SETUP_KEY, create_engines

    url = f"sqlite:///{tmp_path / 'kw.db'}"
    plain = create_engines(url)
    migrate.upgrade(plain)
    rows = [(f"note {i} on {'widgets' if i % 3 else 'sprockets'}", f"a{i}", "t") for i in range(30)]
    with plain.write.begin() as conn:
        conn.exec_driver_sql(
            "INSERT INTO chunks_fts (text, atom_id, tenant_id) VALUES (?, ?, ?)", rows
        )
    prepared = create_engines(url, sqlite_setup=QUERY_TERM_TABLES)
    with prepared.read.connect() as conn:  # before any search
        assert conn.info[SETUP_KEY] == frozenset(QUERY_TERM_TABLES)
        listed = "SELECT count(*) FROM temp.sqlite_master WHERE name = 'query_terms'"
        assert conn.exec_driver_sql(listed).scalar() == 1
    found = {}
    for name, engines in (("plain", plain), ("prepared", prepared)):
        with engines.read.connect() as conn:
            assert bool(conn.info[SETUP_KEY]) == (name == "prepared")
            tx = conn.begin()
            found[name] = [
                h.atom_id
                for h in KnowledgeRepository(conn, Fts5KeywordIndex()).keyword_search(
                    "t", "sprockets", 20
                )
            ]
            tx.rollback()
    assert found["plain"] == found["prepared"]
    assert sorted(found["plain"]) == sorted(f"a{i}" for i in range(30) if i % 3 == 0)
