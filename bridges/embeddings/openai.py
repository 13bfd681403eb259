"""Any OpenAI-compatible ``POST {base_url}/embeddings`` (Ollama, llama.cpp, vLLM, TEI).

Synchronous httpx (callers run it in a worker thread). The dimension is what
the server returns; it is learnt from the first answer (or :meth:`probe`) and
every later answer must match it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import httpx

from bridges.embeddings.base import EmbeddingError, Matrix, normalise_rows

BATCH = 64


class OpenAIEmbedder:
    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        api_key: str | None = None,
        timeout_s: float = 30.0,
        dim: int | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = httpx.Client(
            base_url=base_url.rstrip("/"), headers=headers, timeout=timeout_s, transport=transport
        )
        self._model = model
        self._dim = dim

    @property
    def model(self) -> str:
        return self._model

    @property
    def dim(self) -> int:
        if self._dim is None:
            self.probe()
        assert self._dim is not None
        return self._dim

    def probe(self) -> int:
        """Ask for one embedding to learn the dimension."""
        self.embed(["dimension probe"])
        assert self._dim is not None
        return self._dim

    def close(self) -> None:
        self._client.close()

    def _post(self, texts: list[str]) -> list[list[float]]:
        try:
            r = self._client.post("/embeddings", json={"model": self._model, "input": texts})
        except httpx.HTTPError as exc:
            raise EmbeddingError(f"embeddings request failed: {type(exc).__name__}") from exc
        if r.status_code != 200:
            raise EmbeddingError(f"embeddings server answered {r.status_code}")
        try:
            body: Any = r.json()
            items = sorted(body["data"], key=lambda d: int(d["index"]))
            vectors = [[float(x) for x in item["embedding"]] for item in items]
        except (ValueError, KeyError, TypeError) as exc:
            raise EmbeddingError("embeddings server sent an unexpected body") from exc
        if len(vectors) != len(texts):
            raise EmbeddingError(f"asked for {len(texts)} embeddings, got {len(vectors)}")
        return vectors

    def embed(self, texts: Sequence[str]) -> Matrix:
        rows: list[list[float]] = []
        for start in range(0, len(texts), BATCH):
            rows.extend(self._post(list(texts[start : start + BATCH])))
        if not rows:
            return normalise_rows([[0.0] * (self._dim or 1)])[:0]
        dims = {len(r) for r in rows}
        if len(dims) != 1:
            raise EmbeddingError(f"embeddings of mixed dimensions {sorted(dims)}")
        dim = dims.pop()
        if self._dim is not None and dim != self._dim:
            raise EmbeddingError(f"embedding dimension {dim}, expected {self._dim}")
        self._dim = dim
        return normalise_rows(rows)
