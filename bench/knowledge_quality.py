"""Retrieval quality of the knowledge index on a fixed corpus (run by hand; a pytest
version over the same corpus, with floors, is tests/knowledge/test_quality.py).

    .venv/bin/python bench/knowledge_quality.py            # all three modes
    .venv/bin/python bench/knowledge_quality.py --misses   # also list the misses

bench/knowledge_corpus/docs.tsv holds 52 short help-centre articles (id, title,
text), questions.tsv 104 questions (answer id, kind, question): for each article
one ``lexical`` question sharing its key words and one ``paraphrase`` that
shares few or none. Each article is indexed as a document through the real
pipeline (KnowledgeService: the indexer, chunking, wordllama vectors, FTS5),
then every question is asked in bm25, vector and hybrid mode with
``score_threshold`` 0 and ``top_k`` 10. Reports recall@5 (the answer document
among the first five chunks) and MRR@10, overall and per kind. Importing this
module has no side effects.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import trio

CORPUS = Path(__file__).resolve().parent / "knowledge_corpus"
COLLECTION = "col_bench"


def read_corpus() -> tuple[list[tuple[str, str, str]], list[tuple[str, str, str]]]:
    def rows(name: str) -> list[tuple[str, str, str]]:
        with open(CORPUS / name, encoding="utf-8", newline="") as f:
            return [
                (r[0], r[1], r[2]) for r in csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
            ]

    return rows("docs.tsv"), rows("questions.tsv")


@asynccontextmanager
async def knowledge_service(
    data_dir: Path, database_url: str | None = None, **config: Any
) -> AsyncIterator[Any]:
    """A started KnowledgeService (writer, readers and indexer) on ``data_dir``, its
    store SQLite there or, with ``database_url``, that (empty) PostgreSQL database."""
    from conf.knowledge import KnowledgeConfig
    from homeserver.clock import system_ms
    from homeserver.modules.scaibot.knowledge.build import build_knowledge
    from homeserver.store.postgres import PostgresReaders, PostgresWriter
    from homeserver.store.sqlite import SqliteReaders, SqliteWriter

    writer: Any
    readers: Any
    if database_url is None:
        db = data_dir / "homeserver.db"
        writer = SqliteWriter(db, synchronous="normal", max_batch=64)
        readers = SqliteReaders(db, size=2)
    else:
        writer = PostgresWriter(database_url, synchronous="normal", max_batch=64)
        readers = PostgresReaders(database_url, size=2)
    writer.open()
    readers.open()
    try:
        service = build_knowledge(
            writer,
            readers,
            system_ms,
            dataclasses.replace(KnowledgeConfig(), **config),
            data_dir=data_dir,
            on_erased=lambda: None,
        )
        async with trio.open_nursery() as nursery:
            await nursery.start(writer.run)
            await nursery.start(service.run)
            yield service
            nursery.cancel_scope.cancel()
    finally:
        readers.close()
        writer.close()


async def add_text_documents(
    service: Any, collection_id: str, docs: list[tuple[str, str]]
) -> dict[str, str]:
    """Index ``(name, text)`` documents through the real pipeline; returns document_id -> name."""
    from homeserver.modules.scaibot.knowledge.service import Document
    from protocol import ids

    done = trio.Event()
    pending: set[str] = set()
    names: dict[str, str] = {}

    def observe(document_id: str, status: str) -> None:
        if status in ("indexed", "failed"):
            pending.discard(document_id)
            if not pending:
                done.set()

    service.indexer.observer = observe
    for name, text in docs:
        doc_id = ids.random_id("doc_", 12)
        data = text.encode()
        import hashlib

        doc = Document(
            0,
            doc_id,
            collection_id,
            0,
            name,
            name + ".txt",
            "txt",
            len(data),
            hashlib.sha256(data).hexdigest(),
            1,
            "uploaded",
            None,
            0,
            None,
            "p-bench",
            0,
            0,
            None,
        )
        path = service.path_of(doc)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        await service._writer.write(service._insert_txn, doc)
        pending.add(doc_id)
        names[doc_id] = name
        service.indexer.submit(doc_id, 1)
    if pending:
        await done.wait()
    return names


async def evaluate(
    service: Any, names: dict[str, str], questions: list[tuple[str, str, str]], mode: str
) -> dict[str, Any]:
    from protocol.knowledge import KnowledgeSettings

    settings = KnowledgeSettings(top_k=10, score_threshold=0.0, deduplicate=True)
    per_kind: dict[str, list[tuple[int, float]]] = {}
    misses: list[str] = []
    for answer, kind, question in questions:
        chunks = await service.retriever.retrieve(COLLECTION, question, settings, mode=mode)
        ranked = [names[c.document_id] for c in chunks]
        rank = ranked.index(answer) + 1 if answer in ranked else 0
        hit = 1 if 0 < rank <= 5 else 0
        per_kind.setdefault(kind, []).append((hit, 1.0 / rank if rank else 0.0))
        per_kind.setdefault("all", []).append((hit, 1.0 / rank if rank else 0.0))
        if not hit:
            misses.append(f"{mode:6} {kind:10} {answer:20} {question!r} -> {ranked[:3]}")
    return {
        kind: {
            "recall@5": sum(h for h, _ in v) / len(v),
            "mrr": sum(r for _, r in v) / len(v),
            "n": len(v),
        }
        for kind, v in per_kind.items()
    } | {"misses": misses}


async def run_quality(data_dir: Path, database_url: str | None = None) -> dict[str, dict[str, Any]]:
    docs, questions = read_corpus()
    async with knowledge_service(data_dir, database_url) as service:
        names = await add_text_documents(
            service, COLLECTION, [(d, f"{t}\n\n{x}") for d, t, x in docs]
        )
        return {
            mode: await evaluate(service, names, questions, mode)
            for mode in ("bm25", "vector", "hybrid")
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--misses", action="store_true")
    parser.add_argument(
        "--database-url", help="an empty PostgreSQL database to use as the store (default SQLite)"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        results = trio.run(run_quality, Path(tmp), args.database_url)
    print(f"{'mode':8} {'kind':11} {'n':>4} {'recall@5':>9} {'MRR@10':>7}")
    for mode, by_kind in results.items():
        for kind in ("all", "lexical", "paraphrase"):
            r = by_kind[kind]
            print(f"{mode:8} {kind:11} {r['n']:4} {r['recall@5']:9.3f} {r['mrr']:7.3f}")
    if args.misses:
        for by_kind in results.values():
            for line in by_kind["misses"]:
                print(line)


if __name__ == "__main__":
    main()
