"""Embeddings: wordllama loads its shipped weights with no network; the
OpenAI-compatible client against a real HTTP server on port 0."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import numpy as np
import pytest

from bridges.embeddings import EmbeddingError, OpenAIEmbedder, WordLlamaEmbedder


def test_wordllama_loads_offline_and_embeds(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_network(*args: Any, **kwargs: Any) -> None:
        raise AssertionError(f"network use: {args!r}")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    embedder = WordLlamaEmbedder()
    vectors = embedder.embed(["reset my password", "forgot my login credentials", "paris weather"])
    assert vectors.shape == (3, 256)
    assert vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    sims = vectors @ vectors.T
    assert sims[0, 1] > sims[0, 2]
    assert embedder.model == "wordllama/l2_supercat"
    assert embedder.dim == 256
    assert embedder.embed([]).shape == (0, 256)


class _Handler(BaseHTTPRequestHandler):
    calls: list[dict[str, Any]] = []
    status = 200
    dim = 4

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).calls.append(
            {"path": self.path, "auth": self.headers.get("Authorization"), **body}
        )
        items = [
            {"index": i, "embedding": [float(len(t)), 1.0] + [0.0] * (self.dim - 2)}
            for i, t in enumerate(body["input"])
        ]
        data = json.dumps({"data": list(reversed(items)), "model": body["model"]}).encode()
        self.send_response(self.status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def server() -> Iterator[str]:
    _Handler.calls = []
    _Handler.status = 200
    _Handler.dim = 4
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/v1"
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_openai_embedder_batches_orders_and_normalises(server: str) -> None:
    embedder = OpenAIEmbedder(server, "nomic-embed", api_key="k-1", timeout_s=5)
    texts = [f"text {'x' * n}" for n in range(70)]
    vectors = embedder.embed(texts)
    assert vectors.shape == (70, 4)
    assert embedder.dim == 4
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    expected = np.array([len(texts[3]), 1.0, 0, 0]) / np.hypot(len(texts[3]), 1.0)
    assert np.allclose(vectors[3], expected, atol=1e-5)  # answers re-ordered by index
    assert [len(c["input"]) for c in _Handler.calls] == [64, 6]
    assert all(c["path"] == "/v1/embeddings" for c in _Handler.calls)
    assert _Handler.calls[0]["auth"] == "Bearer k-1"
    assert _Handler.calls[0]["model"] == "nomic-embed"
    _Handler.dim = 5
    with pytest.raises(EmbeddingError, match="dimension"):
        embedder.embed(["changed model"])
    embedder.close()


def test_openai_embedder_failures(server: str) -> None:
    _Handler.status = 500
    with pytest.raises(EmbeddingError, match="500"):
        OpenAIEmbedder(server, "m").embed(["a"])
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()
    with pytest.raises(EmbeddingError, match="request failed"):
        OpenAIEmbedder(f"http://127.0.0.1:{port}/v1", "m", timeout_s=2).embed(["a"])
    _Handler.status = 200
    probe = OpenAIEmbedder(server, "m")
    assert probe.probe() == 4
