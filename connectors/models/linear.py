"""The logistic-regression head shared by ``embed-lr`` (over frozen embeddings), ``tfidf-lr``
(over sparse tf-idf features) and the tuning of linear heads: one fit, one way to score."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

_CHUNK = 8192  # rows scored at a time (float64 copies of one chunk only)


@dataclass(frozen=True, slots=True)
class LinearHead:
    """A fitted logistic-regression head: ``coef`` ``(1, d)`` for two classes (the second one
    is the positive class) or ``(k, d)`` for ``k > 2`` (multinomial), ``intercept`` ``(1,)`` or
    ``(k,)``, over ``classes`` (sorted, as scikit-learn orders them)."""

    coef: np.ndarray
    intercept: np.ndarray
    classes: tuple[str, ...]
    n_iter: int
    converged: bool

    def proba(self, x: Any) -> np.ndarray:
        """``(n, d)`` features (dense or sparse) → ``(n, len(classes))`` float64, rows sum to 1."""
        return linear_proba(x, self.coef, self.intercept)


def fit_linear_head(
    x: Any,
    labels: Sequence[str],
    *,
    C: float,
    max_iter: int,
    seed: int,
    solver: str = "lbfgs",
) -> LinearHead:
    """Fit ``LogisticRegression(C, max_iter, solver, random_state=seed)`` on ``x`` ``(n, d)``
    (dense or scipy sparse) with BLAS limited to one thread (faster on a busy small machine:
    the solvers' vector work is too small to gain from threads)."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from threadpoolctl import threadpool_limits

    lr = LogisticRegression(C=C, max_iter=max_iter, solver=solver, random_state=seed % 2**32)
    with warnings.catch_warnings(record=True) as caught, threadpool_limits(1):
        warnings.simplefilter("always", ConvergenceWarning)
        lr.fit(x, np.asarray(labels, dtype=object))
    converged = not any(issubclass(w.category, ConvergenceWarning) for w in caught)
    return LinearHead(
        coef=np.asarray(lr.coef_, dtype=np.float64),
        intercept=np.asarray(lr.intercept_, dtype=np.float64),
        classes=tuple(str(c) for c in lr.classes_),
        n_iter=int(np.max(lr.n_iter_)),
        converged=converged,
    )


def linear_proba(x: Any, coef: np.ndarray, intercept: np.ndarray) -> np.ndarray:
    """Probabilities of a logistic head, as scikit-learn computes them: a stable sigmoid for
    ``coef`` ``(1, d)`` (columns: negative, positive), a softmax for ``(k, d)``. ``x`` is
    ``(n, d)`` dense or sparse; returns ``(n, 2)`` or ``(n, k)`` float64."""
    n = x.shape[0]
    k = 2 if coef.shape[0] == 1 else coef.shape[0]
    p = np.empty((n, k), dtype=np.float64)
    for start in range(0, n, _CHUNK):
        part = x[start : start + _CHUNK]
        if isinstance(part, np.ndarray):
            part = part.astype(np.float64, copy=False)
        z = np.asarray(part @ coef.T) + intercept
        if coef.shape[0] == 1:
            p1 = np.exp(-np.logaddexp(0.0, -z[:, 0]))
            p[start : start + _CHUNK, 0] = 1.0 - p1
            p[start : start + _CHUNK, 1] = p1
        else:
            e = np.exp(z - z.max(axis=1, keepdims=True))
            p[start : start + _CHUNK] = e / e.sum(axis=1, keepdims=True)
    return p
