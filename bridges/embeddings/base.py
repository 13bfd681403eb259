"""What the knowledge index needs from an embedding model.

``embed`` is synchronous and may block (a model on the CPU, an HTTP call):
callers run it in a worker thread. It returns one L2-normalised float32 row
per text, so a dot product is the cosine similarity. ``model`` and ``dim`` are
stored beside every vector; vectors of another model or dimension are never
compared with this one's.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np
import numpy.typing as npt

Matrix = npt.NDArray[np.float32]


class EmbeddingError(Exception):
    """The embedding model failed (the message says why; no secrets in it)."""


class Embedder(Protocol):
    @property
    def model(self) -> str: ...

    @property
    def dim(self) -> int: ...

    def embed(self, texts: Sequence[str]) -> Matrix:
        """``len(texts) x dim`` float32, each row of unit length (or zero)."""
        ...


def normalise_rows(matrix: npt.ArrayLike) -> Matrix:
    rows = np.asarray(matrix, dtype=np.float32)
    if rows.ndim != 2:
        raise EmbeddingError(f"expected a matrix of vectors, got shape {rows.shape}")
    norms = np.linalg.norm(rows, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    return np.ascontiguousarray(rows / norms, dtype=np.float32)
