"""Shared generators for the strategies tests (hypothesis strategies over probability matrices)."""

from __future__ import annotations

import numpy as np
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp


@st.composite
def proba_matrices(
    draw: st.DrawFn, *, min_rows: int = 1, max_rows: int = 40, max_classes: int = 8
) -> np.ndarray:
    """``(n, C)`` float64 rows that sum to 1, with exact zeros, ties and near-one-hot rows."""
    n = draw(st.integers(min_rows, max_rows))
    c = draw(st.integers(2, max_classes))
    weights = draw(
        hnp.arrays(
            np.float64,
            (n, c),
            elements=st.one_of(
                st.just(0.0), st.just(1.0), st.floats(0.0, 1.0, allow_subnormal=False)
            ),
        )
    )
    sums = weights.sum(axis=1, keepdims=True)
    weights[sums[:, 0] == 0] = 1.0  # an all-zero row becomes uniform
    return weights / weights.sum(axis=1, keepdims=True)
