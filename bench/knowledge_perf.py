"""Knowledge index performance (run by hand; figures in bench/RESULTS.md).

    .venv/bin/python bench/knowledge_perf.py                 # 10k and 100k chunks
    .venv/bin/python bench/knowledge_perf.py --sizes 10000   # one size
    .venv/bin/python bench/knowledge_perf.py --keep /tmp/kp  # reuse filled databases

1. Indexing throughput: the bench corpus's articles repeated into documents of
   about 200 KB of text, indexed through the real pipeline (KnowledgeService:
   indexer, chunking, wordllama embeddings, FTS5 + vectors in one transaction);
   MB of text per second.
2. Retrieval latency at N chunks in one collection: synthetic chunks (~450
   tokens of varied words plus a corpus article), stored with real wordllama
   vectors of the article text plus noise, through storage.knowledge; then the
   104 corpus questions asked in hybrid mode, query embedding included, after
   one warm-up query that loads the vector matrix. p50/p99 over 3 rounds, wall
   clock and CPU time of the process (all threads; what the query costs whatever
   else runs on the machine).
3. Added time to first token with knowledge on: retrieval plus assembling the
   prompt (protocol.llm.format_knowledge over the chunks, the system message)
   measured the same way: what a chat turn spends before the model call.
Importing this module has no side effects.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import trio

sys.path.insert(0, str(Path(__file__).resolve().parent))

import knowledge_quality as kq


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


async def indexing_throughput(data_dir: Path) -> dict[str, float]:
    docs, _ = kq.read_corpus()
    body = "\n\n".join(f"{t}\n\n{x}" for _, t, x in docs)
    texts = [(f"d{n}", (body + "\n\n") * 16) for n in range(4)]  # ~200 KB each
    async with kq.knowledge_service(data_dir) as service:
        service.retriever  # noqa: B018 - embedder warm-up below
        await trio.to_thread.run_sync(service.indexer._embedder.embed, ["warm up"])
        start = time.perf_counter()
        await kq.add_text_documents(service, "col_perf", texts)
        elapsed = time.perf_counter() - start
    mb = sum(len(t.encode()) for _, t in texts) / 1e6
    return {"mb": mb, "seconds": elapsed, "mb_per_s": mb / elapsed}


def _fill(service: Any, n_chunks: int, rng: random.Random) -> None:
    """Write ``n_chunks`` chunks straight through storage (the writer is not running)."""
    from bridges.embeddings import WordLlamaEmbedder
    from protocol.knowledge_rank import content_key
    from storage import db, migrate
    from storage import knowledge as store

    docs, _ = kq.read_corpus()
    articles = [f"{t}. {x}" for _, t, x in docs]
    embedder = WordLlamaEmbedder()
    base = embedder.embed(articles)
    # Filler: made-up words, Zipf-distributed over 20,000 of them, so term frequencies
    # look like text (a few very common words, a long tail); every chunk also holds one
    # corpus article, so each real word of a question is in at least 1/52 of the chunks.
    words = [f"w{n:05d}x" for n in range(20_000)]
    weights = 1.0 / np.arange(1, len(words) + 1)
    np_rng = np.random.default_rng(7)
    weights /= weights.sum()
    conn = db.connect(service["db"], synchronous="normal")
    migrate.migrate(conn)
    number = store.ensure_collection_txn(conn, "col_perf", 0)
    conn.execute("BEGIN")
    per_doc = 100
    for d in range(n_chunks // per_doc):
        doc = store.Document(
            0,
            f"doc_{d}",
            "col_perf",
            number,
            f"d{d}",
            None,
            "txt",
            1,
            "x",
            1,
            "indexed",
            None,
            per_doc,
            1,
            "p",
            0,
            0,
            0,
        )
        store.insert_document_txn(conn, doc)
        chunks = []
        drawn = np_rng.choice(len(words), size=(per_doc, 300), p=weights)
        for c in range(per_doc):
            a = rng.randrange(len(articles))
            filler = " ".join(words[i] for i in drawn[c])
            text = f"{articles[a]} {filler}"
            vec = base[a] + np_rng.normal(0, 0.04, base.shape[1]).astype(np.float32)
            vec /= np.linalg.norm(vec)
            chunks.append(
                store.NewChunk(f"chk_{d}_{c}", text, content_key(text), vec.astype("<f4").tobytes())
            )
        store.store_chunks_txn(
            conn,
            f"doc_{d}",
            1,
            chunks,
            embed_model=embedder.model,
            embed_dim=embedder.dim,
            text_chars=1,
            now_ms=0,
        )
    conn.execute("COMMIT")
    conn.close()


async def latency(data_dir: Path, n_chunks: int) -> dict[str, float]:
    from protocol.knowledge import KnowledgeSettings
    from protocol.llm import format_knowledge

    if not (data_dir / "homeserver.db").exists():
        _fill({"db": data_dir / "homeserver.db"}, n_chunks, random.Random(7))
    _, questions = kq.read_corpus()
    settings = KnowledgeSettings()
    async with kq.knowledge_service(data_dir) as service:
        t0 = time.perf_counter()
        await service.retriever.retrieve("col_perf", "warm up the matrix", settings)
        load = time.perf_counter() - t0
        retrieval: list[float] = []
        turn: list[float] = []
        cpu: list[float] = []
        for _ in range(3):
            for _, _, q in questions:
                c0 = time.process_time()
                t0 = time.perf_counter()
                chunks = await service.retriever.retrieve("col_perf", q, settings)
                t1 = time.perf_counter()
                system = format_knowledge([c.text for c in chunks])
                assert system
                t2 = time.perf_counter()
                cpu.append((time.process_time() - c0) * 1000)
                retrieval.append((t1 - t0) * 1000)
                turn.append((t2 - t0) * 1000)
    return {
        "chunks": n_chunks,
        "matrix_load_s": load,
        "p50_ms": pct(retrieval, 50),
        "p99_ms": pct(retrieval, 99),
        "ttft_added_p50_ms": pct(turn, 50),
        "ttft_added_p99_ms": pct(turn, 99),
        "mean_ms": statistics.fmean(retrieval),
        "cpu_p50_ms": pct(cpu, 50),
        "cpu_p99_ms": pct(cpu, 99),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="*", default=[10_000, 100_000])
    parser.add_argument("--keep", help="keep the filled databases here and reuse them")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        r = trio.run(indexing_throughput, Path(tmp) / "tp")
        print(
            f"indexing: {r['mb']:.2f} MB of text in {r['seconds']:.2f} s = {r['mb_per_s']:.3f} MB/s"
        )
    for n in args.sizes:
        with tempfile.TemporaryDirectory() as tmp:
            where = Path(args.keep) / str(n) if args.keep else Path(tmp) / "d"
            where.mkdir(parents=True, exist_ok=True)
            r = trio.run(latency, where, n)
            print(
                f"retrieval @ {n} chunks (hybrid, query embedding included):"
                f" p50 {r['p50_ms']:.2f} ms,"
                f" p99 {r['p99_ms']:.2f} ms (matrix load {r['matrix_load_s']:.2f} s);"
                f" added TTFT p50 {r['ttft_added_p50_ms']:.2f} ms,"
                f" p99 {r['ttft_added_p99_ms']:.2f} ms; CPU per query (all threads)"
                f" p50 {r['cpu_p50_ms']:.2f} ms, p99 {r['cpu_p99_ms']:.2f} ms"
            )


if __name__ == "__main__":
    main()
