"""The vector scan: exact for small collections, two-stage for large ones."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from homeserver.modules.scaibot.knowledge.retrieval import COARSE_FROM_ROWS, _matrix, _top


def _unit(rows: npt.NDArray[np.float64]) -> npt.NDArray[np.float32]:
    unit: npt.NDArray[np.float32] = (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(
        np.float32
    )
    return unit


def test_small_matrix_scan_is_exact() -> None:
    rng = np.random.default_rng(1)
    vectors = _unit(rng.normal(size=(500, 256)))
    m = _matrix(0, list(range(10, 510)), vectors.tobytes(), 256)
    assert m.tail is None
    q = vectors[42]
    top = _top(m, q, 5)
    assert top[0][0] == 52
    assert top[0][1] == np.float32(1.0) or abs(top[0][1] - 1.0) < 1e-5
    exact = np.argsort(-(vectors @ q))[:5] + 10
    assert [no for no, _ in top] == list(exact)
    assert _top(m, q, 1000)[-1][0] == int(np.argmin(vectors @ q)) + 10


def test_large_matrix_two_stage_scan_finds_the_nearest() -> None:
    rng = np.random.default_rng(2)
    n = COARSE_FROM_ROWS + 5000
    vectors = _unit(rng.normal(size=(n, 256)))
    m = _matrix(0, list(range(n)), vectors.tobytes(), 256)
    assert m.tail is not None
    for target in rng.integers(0, n, 20):
        q = _unit((vectors[target] + rng.normal(0, 0.02, 256))[None, :])[0]
        top = _top(m, q, 10)
        assert top[0][0] == target
        exact = vectors @ q
        assert abs(top[0][1] - exact[target]) < 1e-4
        scores = [s for _, s in top]
        assert scores == sorted(scores, reverse=True)
