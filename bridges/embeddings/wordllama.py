"""The offline default: wordllama's shipped 256-dimension weights, no download.

``WordLlama.load()`` with no arguments looks for its weights in a cache
directory and downloads them when absent (the wheel's own copy is missed
because of a path bug). Pointing ``cache_dir`` at the installed package and
passing ``disable_download=True`` loads the shipped files in about 0.3 s and
can never touch the network: a missing file is an error, not a download.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bridges.embeddings.base import EmbeddingError, Matrix, normalise_rows

CONFIG = "l2_supercat"
DIM = 256


class WordLlamaEmbedder:
    """Loads lazily (first ``embed``), once; safe to call from several threads."""

    def __init__(self, config: str = CONFIG, dim: int = DIM) -> None:
        self._config = config
        self._dim = dim
        self._model: Any = None
        self._lock = threading.Lock()

    @property
    def model(self) -> str:
        return f"wordllama/{self._config}"

    @property
    def dim(self) -> int:
        return self._dim

    def load(self) -> None:
        with self._lock:
            if self._model is not None:
                return
            try:
                import wordllama
                from wordllama import WordLlama
            except ImportError as exc:  # pragma: no cover - it is a dependency
                raise EmbeddingError("the wordllama package is not installed") from exc
            package_dir = Path(wordllama.__file__).resolve().parent
            try:
                self._model = WordLlama.load(
                    config=self._config,
                    cache_dir=package_dir,
                    dim=self._dim,
                    disable_download=True,
                )
            except Exception as exc:
                raise EmbeddingError(f"cannot load the shipped wordllama weights: {exc}") from exc

    def embed(self, texts: Sequence[str]) -> Matrix:
        self.load()
        if not texts:
            return normalise_rows([[0.0] * self._dim])[:0]
        vectors = self._model.embed(list(texts), norm=False, return_np=True)
        return normalise_rows(vectors)
