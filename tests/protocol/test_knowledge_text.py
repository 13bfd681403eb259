"""Pure knowledge rules: type sniffing, chunking, bm25 queries, fusion, selection."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol.knowledge import KnowledgeSettings
from protocol.knowledge_rank import (
    Candidate,
    bm25_score,
    content_key,
    cosine_score,
    fuse,
    rrf,
    select,
)
from protocol.knowledge_text import (
    PDF_MIME,
    budget_terms,
    chunk_text,
    fts_query,
    index_term_keys,
    query_terms,
    sniff_type,
    term_key,
)
from protocol.llm import estimate_tokens


@pytest.mark.parametrize(
    ("head", "mime", "name", "expected"),
    [
        (b"%PDF-1.7", PDF_MIME, None, "pdf"),
        (
            b"PK..",
            "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
            None,
            "docx",
        ),
        (b"PK..", "application/zip", None, None),
        (b"\x89PNG", "image/png", "a.txt", None),
        (b"  <!-- c --> <!DOCTYPE html><p>x", None, None, "html"),
        (b"intro text <body>hi</body>", None, None, "html"),
        (b"# Title\n\nbody", None, None, "md"),
        (b"see [the docs](http://x)", None, None, "md"),
        (b"plain words", None, "notes.markdown", "md"),
        (b"plain words", None, "notes.txt", "txt"),
        ("caf\u00e9 na\u00efve".encode(), None, None, "txt"),
        ("\ufeffbom text".encode(), None, None, "txt"),
        ("utf16 text".encode("utf-16"), None, None, "txt"),
        (b"\xfd\xfe not utf8", None, None, None),
        (b"nul\x00inside", None, None, None),
        (b"   \n\t ", None, None, None),
        (b"", None, None, None),
        ("cut in the middle \u00e9".encode()[:-1], None, None, "txt"),
    ],
)
def test_sniff_type(head: bytes, mime: str | None, name: str | None, expected: str | None) -> None:
    assert sniff_type(head, mime, name) == expected


def test_chunks_follow_sentences_and_overlap() -> None:
    sentences = [f"Sentence number {n} says something about topic {n}." for n in range(200)]
    text = " ".join(sentences[:100]) + "\n\n" + " ".join(sentences[100:])
    chunks = chunk_text(text, target=100, overlap=20)
    assert len(chunks) > 5
    for chunk in chunks:
        assert estimate_tokens(chunk) <= 100
        assert chunk.endswith(".")  # ends on a sentence boundary
        assert chunk[0].isupper()
    for a, b in itertools.pairwise(chunks):
        first = b.split(". ")[0] + "."
        assert first in a  # b starts with the tail of a
    assert all(s in "".join(chunks) for s in sentences)


def test_default_chunk_size_is_about_500_tokens() -> None:
    text = " ".join(f"This is sentence {n} of a long document." for n in range(2000))
    chunks = chunk_text(text)
    sizes = [estimate_tokens(c) for c in chunks]
    assert max(sizes) <= 500
    assert min(sizes[:-1]) >= 400


def test_chunk_arguments_checked() -> None:
    with pytest.raises(ValueError, match="overlap"):
        chunk_text("x", target=10, overlap=10)


@settings(max_examples=200, deadline=None)
@given(
    st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=3000),
    st.integers(8, 200),
    st.integers(0, 7),
)
def test_chunking_keeps_every_word(text: str, target: int, overlap: int) -> None:
    chunks = chunk_text(text, target=target, overlap=overlap)
    words = text.split()
    joined = " ".join(chunks).split()
    assert set(words) <= set(joined)
    assert all(c.strip() == c and c for c in chunks)
    for chunk in chunks:
        for word in chunk.split():
            assert word in words  # never cut inside a word
    if not words:
        assert chunks == []


@given(st.text(max_size=300))
def test_fts_query_quotes_every_term(text: str) -> None:
    q = fts_query(text)
    if q is not None:
        for part in q.split(" OR "):
            assert part.startswith('"')
            assert part.endswith('"')
            assert '"' not in part[1:-1]


def test_fts_query_drops_stopwords() -> None:
    assert fts_query("How do I reset my password?") == '"reset" OR "password"'
    assert fts_query("the and of") is None
    assert fts_query('NEAR("a" b) AND') == '"near" OR "b"'


def test_scores_are_fixed_curves_in_0_1() -> None:
    assert bm25_score(0.0) == 0.0
    assert bm25_score(-12.0) == pytest.approx(0.5)
    assert 0 < bm25_score(-1) < bm25_score(-20) < 1
    assert cosine_score(-1.0) == 0.0
    assert cosine_score(1.0) == 1.0


def test_rrf_and_fusion() -> None:
    fused = rrf([[1, 2, 3], [3, 1]])
    assert fused[1] == pytest.approx(1 / 61 + 1 / 62)
    assert max(fused, key=lambda k: fused[k]) == 1
    ranked = fuse([(1, -10.0), (2, -5.0)], [(2, 0.8), (3, 0.6)])
    assert [k for k, _ in ranked] == [2, 1, 3]
    scores = dict(ranked)
    assert scores[2] == pytest.approx(1 - (1 - bm25_score(-5)) * (1 - cosine_score(0.8)))
    assert scores[1] == pytest.approx(bm25_score(-10))
    assert [k for k, _ in fuse([(1, -10.0)], [(3, 0.9)], "bm25")] == [1]
    assert [k for k, _ in fuse([(1, -10.0)], [(3, 0.9)], "vector")] == [3]
    with pytest.raises(ValueError, match="mode"):
        fuse([], [], "magic")


def test_select_applies_every_setting() -> None:
    cands = {
        1: Candidate("c1", "d1", "Alpha text", content_key("Alpha text")),
        2: Candidate("c2", "d1", "alpha   TEXT", content_key("alpha   TEXT")),
        3: Candidate("c3", "d1", "Beta", content_key("Beta")),
        4: Candidate("c4", "d2", "Gamma", content_key("Gamma")),
        5: Candidate("c5", "d3", "Low", content_key("Low")),
    }
    ranked = [(1, 0.9), (2, 0.85), (3, 0.8), (9, 0.75), (4, 0.7), (5, 0.1)]
    got = select(ranked, cands, KnowledgeSettings())
    assert [c.chunk_id for c in got] == ["c1", "c3", "c4"]
    got = select(ranked, cands, KnowledgeSettings(deduplicate=False, max_chunks_per_doc=2))
    assert [c.chunk_id for c in got] == ["c1", "c2", "c4"]
    got = select(ranked, cands, KnowledgeSettings(top_k=1, score_threshold=0.0))
    assert [c.chunk_id for c in got] == ["c1"]
    got = select(ranked, cands, KnowledgeSettings(top_k=10, score_threshold=0.0))
    assert got[-1].chunk_id == "c5"
    assert all(0 <= c.score <= 1 for c in got)


def test_budget_terms_keeps_the_rarest_within_budget() -> None:
    terms = ["files", "invoice", "zebra", "account"]
    df = {"fil": 900, "invoice": 40, "zebra": 0, "account": 300}
    assert budget_terms(terms, df, 10_000) == terms
    assert budget_terms(terms, df, 400) == ["invoice", "zebra", "account"]
    assert budget_terms(terms, df, 100) == ["invoice", "zebra"]
    assert budget_terms(terms, {"zebra": 5000}, 100) == ["files", "invoice", "account"]
    assert budget_terms(["files"], df, 10) == []


def test_term_keys_group_simple_forms() -> None:
    assert term_key("invoices") == "invoic"
    assert term_key("files") == "fil"
    assert term_key("file") == "file"
    assert term_key("is") == "is"
    assert index_term_keys("The invoices, the INVOICES and files.") == {"invoic", "fil"}
    assert query_terms("How do the invoices work? invoices!") == ["invoices", "work"]
