"""Retrieval quality floors on the bench corpus (bench/knowledge_quality.py; the
figures are in bench/RESULTS.md). A floor, not a timing: it catches a ranking
or scoring regression."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

BENCH = Path(__file__).resolve().parents[2] / "bench" / "knowledge_quality.py"


def _bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("knowledge_quality", BENCH)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


async def test_retrieval_quality_floors(tmp_path: Path) -> None:
    bench = _bench()
    docs, questions = bench.read_corpus()
    assert len(docs) >= 50
    assert len(questions) >= 100
    results = await bench.run_quality(tmp_path)
    bm25, vector, hybrid = results["bm25"], results["vector"], results["hybrid"]
    assert bm25["lexical"]["recall@5"] >= 0.95
    assert vector["paraphrase"]["recall@5"] >= 0.65
    assert hybrid["all"]["recall@5"] >= 0.9
    assert hybrid["all"]["recall@5"] > bm25["all"]["recall@5"]
    assert hybrid["paraphrase"]["recall@5"] > bm25["paraphrase"]["recall@5"]
    assert hybrid["all"]["mrr"] >= 0.75
