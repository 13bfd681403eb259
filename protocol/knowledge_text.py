"""Pure text rules of the knowledge index: what type a document is, and its chunks.

Type sniffing
-------------
The type comes from the bytes, never from the client's name or Content-Type
alone. The caller passes what a magic-number sniffer (``filetype``) found:

- ``application/pdf`` -> ``pdf``; the DOCX MIME type -> ``docx``; any other
  binary kind -> unsupported.
- Otherwise the bytes must be text: UTF-8 (a BOM allowed) or UTF-16 with a
  BOM, with no NUL byte and almost no other control characters. Text that
  opens (after whitespace and comments) with ``<!doctype html``, ``<html``,
  ``<head`` or ``<body``, or has one of those tags in its first KiB, is
  ``html``; text with a Markdown structure (an ATX heading, a fence, a
  link ``[x](y)``) in its first lines, or named ``*.md``/``*.markdown``, is
  ``md``; the rest is ``txt``. Anything else is unsupported (415).

Chunking
--------
Paragraphs (blank-line separated) are split into sentences; sentences are
packed greedily into chunks of about ``target`` tokens (``estimate_tokens``);
the next chunk starts with the last sentences of the previous one that fit in
``overlap`` tokens. A sentence longer than ``target`` is cut on word
boundaries. Chunks never start or end inside a word.
"""

from __future__ import annotations

import codecs
import re
from collections.abc import Iterable

from protocol.llm import estimate_tokens

PDF_MIME = "application/pdf"
DOCX_MIME = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
DOC_TYPES = ("txt", "md", "html", "pdf", "docx")
MIME_OF = {
    "txt": "text/plain",
    "md": "text/markdown",
    "html": "text/html",
    "pdf": PDF_MIME,
    "docx": DOCX_MIME,
}

_HTML_START = re.compile(
    r"^\s*(?:<!--.*?-->\s*)*<(?:!doctype\s+html|html|head|body)\b", re.I | re.S
)
_HTML_TAG = re.compile(r"<(?:html|head|body)\b[^>]*>", re.I)
_MD_HINT = re.compile(r"^(?:#{1,6}\s+\S|```|~~~)|\[[^\]\n]+\]\([^)\s]+\)", re.M)
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0e-\x1f\x7f]")


def decode_text(data: bytes, *, partial: bool = False) -> str | None:
    """The text of ``data`` if it is UTF-8 (BOM allowed) or BOM-marked UTF-16, else None.

    ``partial``: ``data`` is a prefix, so a character cut at its end is not an error.
    """
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        encoding = "utf-16"
    else:
        encoding = "utf-8-sig"
    decoder = codecs.getincrementaldecoder(encoding)()
    try:
        text = decoder.decode(data, final=not partial)
    except UnicodeDecodeError:
        return None
    if "\x00" in text:
        return None
    controls = len(_CONTROL.findall(text))
    if controls > max(2, len(text) // 1000):
        return None
    return text


def sniff_type(head: bytes, binary_mime: str | None, filename: str | None) -> str | None:
    """``txt | md | html | pdf | docx`` for a document whose first bytes are ``head``,
    or None when it is not one of them. ``binary_mime``: a magic-number match, if any."""
    if binary_mime == PDF_MIME:
        return "pdf"
    if binary_mime == DOCX_MIME:
        return "docx"
    if binary_mime is not None and not binary_mime.startswith("text/"):
        return None
    if not head:
        return None
    text = decode_text(head, partial=True)
    if text is None or not text.strip():
        return None
    if _HTML_START.match(text) or _HTML_TAG.search(text[:1024]):
        return "html"
    name = (filename or "").lower()
    if name.endswith((".md", ".markdown")) or _MD_HINT.search(text[:4096]):
        return "md"
    return "txt"


# ------------------------------------------------------------------ chunking

_SENTENCE_END = re.compile(r"(?<=[.!?…])[\"')\]]*\s+(?=\S)")
_PARAGRAPH = re.compile(r"\n\s*\n")


def normalise_whitespace(text: str) -> str:
    """Collapse runs of spaces inside lines and of blank lines; keep paragraph breaks."""
    lines = [" ".join(line.split()) for line in text.replace("\r\n", "\n").split("\n")]
    out: list[str] = []
    blank = False
    for line in lines:
        if not line:
            blank = bool(out)
            continue
        if blank:
            out.append("")
            blank = False
        out.append(line)
    return "\n".join(out)


def _sentences(text: str) -> Iterable[str]:
    for paragraph in _PARAGRAPH.split(text):
        flat = " ".join(paragraph.split())
        if not flat:
            continue
        pieces = _SENTENCE_END.split(flat)
        for n, piece in enumerate(pieces):
            # The last sentence of a paragraph carries the paragraph break.
            yield piece + ("\n\n" if n == len(pieces) - 1 else " ")


def _cut_long(sentence: str, target: int) -> list[str]:
    words = sentence.split(" ")
    pieces: list[str] = []
    current: list[str] = []
    size = 0
    for word in words:
        cost = estimate_tokens(word + " ")
        if current and size + cost > target:
            pieces.append(" ".join(current) + " ")
            current, size = [], 0
        current.append(word)
        size += cost
    if current:
        pieces.append(" ".join(current))
    return pieces


def chunk_text(text: str, *, target: int = 500, overlap: int = 50) -> list[str]:
    """Split ``text`` into chunks of about ``target`` tokens overlapping by ``overlap``."""
    if target < 1 or not 0 <= overlap < target:
        raise ValueError("need target >= 1 and 0 <= overlap < target")
    units: list[str] = []
    for sentence in _sentences(text):
        if estimate_tokens(sentence) > target:
            units.extend(_cut_long(sentence, target))
        else:
            units.append(sentence)
    chunks: list[str] = []
    current: list[str] = []
    size = 0
    fresh = 0  # units in ``current`` not already in the previous chunk
    for unit in units:
        cost = estimate_tokens(unit)
        if current and fresh and size + cost > target:
            chunks.append("".join(current).strip())
            kept: list[str] = []
            kept_size = 0
            for previous in reversed(current):
                c = estimate_tokens(previous)
                if kept_size + c > overlap or kept_size + c + cost > target:
                    break
                kept.insert(0, previous)
                kept_size += c
            current, size, fresh = kept, kept_size, 0
        current.append(unit)
        size += cost
        fresh += 1
    if current and fresh:
        chunks.append("".join(current).strip())
    return [c for c in chunks if c]


# ------------------------------------------------------------- bm25 queries

STOPWORDS = frozenset(
    [
        "a",
        "about",
        "above",
        "after",
        "again",
        "all",
        "am",
        "an",
        "and",
        "any",
        "are",
        "as",
        "at",
        "be",
        "because",
        "been",
        "before",
        "being",
        "below",
        "between",
        "both",
        "but",
        "by",
        "can",
        "could",
        "did",
        "do",
        "does",
        "doing",
        "down",
        "during",
        "each",
        "few",
        "for",
        "from",
        "further",
        "had",
        "has",
        "have",
        "having",
        "he",
        "her",
        "here",
        "hers",
        "him",
        "his",
        "how",
        "i",
        "if",
        "in",
        "into",
        "is",
        "it",
        "its",
        "itself",
        "just",
        "me",
        "more",
        "most",
        "my",
        "no",
        "nor",
        "not",
        "now",
        "of",
        "off",
        "on",
        "once",
        "only",
        "or",
        "other",
        "our",
        "ours",
        "out",
        "over",
        "own",
        "same",
        "she",
        "should",
        "so",
        "some",
        "such",
        "than",
        "that",
        "the",
        "their",
        "theirs",
        "them",
        "then",
        "there",
        "these",
        "they",
        "this",
        "those",
        "through",
        "to",
        "too",
        "under",
        "until",
        "up",
        "very",
        "was",
        "we",
        "were",
        "what",
        "when",
        "where",
        "which",
        "while",
        "who",
        "whom",
        "why",
        "will",
        "with",
        "would",
        "you",
        "your",
        "yours",
    ]
)
_WORD = re.compile(r"\w+", re.UNICODE)
MAX_QUERY_TERMS = 32
MAX_TERM_CHARS = 64


def query_terms(text: str) -> list[str]:
    """The distinct non-stopword words of a query, lower-cased, in order (at most 32)."""
    terms: list[str] = []
    for word in _WORD.findall(text.lower()):
        if word in STOPWORDS or word in terms or len(word) > MAX_TERM_CHARS:
            continue
        terms.append(word)
        if len(terms) >= MAX_QUERY_TERMS:
            break
    return terms


def fts_match(terms: list[str]) -> str | None:
    """An FTS5 MATCH expression: every term quoted (never read as an operator), OR-ed."""
    if not terms:
        return None
    return " OR ".join(f'"{t}"' for t in terms)


def fts_query(text: str) -> str | None:
    """:func:`fts_match` of :func:`query_terms`; None when nothing is left."""
    return fts_match(query_terms(text))


_SUFFIXES = ("ingly", "edly", "ings", "ing", "ies", "ied", "ed", "es", "ly", "s")


def term_key(word: str) -> str:
    """A crude stem keying the document-frequency table: it only has to group the
    forms FTS5's porter stemmer groups well enough to estimate a term's cost."""
    for suffix in _SUFFIXES:
        if len(word) > len(suffix) + 2 and word.endswith(suffix):
            return word[: -len(suffix)]
    return word


def index_term_keys(text: str) -> set[str]:
    """The distinct term keys of a chunk (what the document-frequency table counts)."""
    return {
        term_key(w)
        for w in _WORD.findall(text.lower())
        if w not in STOPWORDS and len(w) <= MAX_TERM_CHARS
    }


def budget_terms(terms: list[str], df: dict[str, int], budget: int) -> list[str]:
    """The query terms the bm25 leg scores: rarest first while their document
    frequencies add up to at most ``budget`` (FTS5 scores every chunk a term
    matches, so this bounds the cost; in a small collection nothing is dropped).
    A term too common to fit carries little weight in bm25 anyway; the vector leg
    still sees the whole query."""
    chosen: list[str] = []
    spent = 0
    for term in sorted(terms, key=lambda t: df.get(term_key(t), 0)):
        cost = df.get(term_key(term), 0)
        if spent + cost > budget:
            break
        chosen.append(term)
        spent += cost
    return [t for t in terms if t in chosen]
