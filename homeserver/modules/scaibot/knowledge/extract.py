"""Text extraction: blocking, run in a worker thread (see indexer).

One function per type. Every failure is an :class:`ExtractionError` whose
message becomes the document's ``error``: an encrypted PDF, a file that does
not parse, a document with no text.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import filetype

from protocol.knowledge_text import decode_text, normalise_whitespace, sniff_type


class ExtractionError(Exception):
    """The document's text cannot be had; the message says why (shown to the client)."""


def sniff(head: bytes, filename: str | None) -> str | None:
    """``txt | md | html | pdf | docx`` from a document's first bytes, or None."""
    kind = filetype.guess(head)
    mime = None if kind is None else str(kind.mime)
    if mime == "application/zip" and b"word/" in head:
        mime = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
    return sniff_type(head, mime, filename)


def _pdf(path: Path) -> str:
    from pypdf import PdfReader
    from pypdf.errors import PdfReadError

    try:
        reader = PdfReader(path)
        if reader.is_encrypted:
            try:
                opened = reader.decrypt("")
            except Exception as exc:  # pypdf raises several types for ciphers it lacks
                raise ExtractionError("the PDF is encrypted") from exc
            if not opened:
                raise ExtractionError("the PDF is encrypted (a password is needed)")
        pages = [page.extract_text() or "" for page in reader.pages]
    except ExtractionError:
        raise
    except (PdfReadError, ValueError, KeyError, TypeError, OSError, IndexError) as exc:
        raise ExtractionError(f"the PDF cannot be read: {type(exc).__name__}") from exc
    return "\n\n".join(pages)


def _docx(path: Path) -> str:
    import docx
    from docx.opc.exceptions import PackageNotFoundError

    try:
        document = docx.Document(str(path))
    except (PackageNotFoundError, zipfile.BadZipFile, KeyError, ValueError, OSError) as exc:
        raise ExtractionError(f"the DOCX cannot be read: {type(exc).__name__}") from exc
    except Exception as exc:  # lxml errors and the like from a damaged package
        raise ExtractionError(f"the DOCX cannot be read: {type(exc).__name__}") from exc
    parts = [p.text for p in document.paragraphs]
    for table in document.tables:
        for row in table.rows:
            parts.append(" | ".join(cell.text for cell in row.cells))
    return "\n\n".join(parts)


_BLOCKS = "p, h1, h2, h3, h4, h5, h6, li, dt, dd, pre, blockquote, tr, div, section, article"


def html_text(markup: str) -> str:
    """The visible text of an HTML document: no script, style, template or head."""
    from selectolax.lexbor import LexborHTMLParser

    tree = LexborHTMLParser(markup)
    title_node = tree.css_first("title")
    title = "" if title_node is None else title_node.text(strip=True)
    for tag in ("script", "style", "noscript", "template", "head", "svg", "iframe", "object"):
        for node in tree.css(tag):
            node.decompose()
    body = tree.body or tree.root
    if body is None:
        return ""
    # Paragraph breaks between block elements, so chunking can follow them.
    for node in body.css(_BLOCKS):
        node.insert_after("\n\n")
    for node in body.css("td, th, br"):
        node.insert_after(" ")
    text = body.text(separator="", strip=False)
    return (title + "\n\n" if title else "") + text


def _text(path: Path) -> str:
    text = decode_text(path.read_bytes())
    if text is None:
        raise ExtractionError("the file is not valid UTF-8 or UTF-16 text")
    return text


def extract_text(path: Path, doc_type: str) -> str:
    """The document's text, whitespace normalised, paragraph breaks kept."""
    if doc_type == "pdf":
        text = _pdf(path)
    elif doc_type == "docx":
        text = _docx(path)
    elif doc_type == "html":
        text = html_text(_text(path))
    elif doc_type in ("txt", "md"):
        text = _text(path)
    else:
        raise ExtractionError(f"unsupported document type {doc_type!r}")
    text = normalise_whitespace(text)
    if not text.strip():
        raise ExtractionError("the document has no text to index")
    return text


EXIT_EXTRACTION_ERROR = 3


def main(argv: list[str]) -> int:
    """``python -m ...extract FILE TYPE``: the text on stdout (UTF-8), or exit 3 with the
    reason on stderr. Run by extractor.Extractor in a child process."""
    import sys

    try:
        text = extract_text(Path(argv[0]), argv[1])
    except ExtractionError as exc:
        sys.stderr.write(str(exc))
        return EXIT_EXTRACTION_ERROR
    sys.stdout.buffer.write(text.encode("utf-8"))
    return 0


if __name__ == "__main__":
    import sys

    sys.exit(main(sys.argv[1:]))
