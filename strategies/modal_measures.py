"""The same measures computed by modAL (``modAL.uncertainty``), wrapped so its pitfalls stay here.

modAL's measures take an estimator and call its ``predict_proba``; a ``NotFittedError`` there
makes them return constant scores silently. Its sampling functions return the top-k unordered,
and ``BaseLearner.query`` calls a failing strategy a second time. These wrappers avoid all of
that: they validate ``proba`` exactly like :mod:`strategies.measures`, hand modAL an object whose
``predict_proba`` returns that (already computed) matrix and can never be "not fitted", call only
modAL's measure functions (never a learner or a sampling function), and convert the result to
this package's convention (float64, higher = ask first). Work is done chunk by chunk, so memory
stays bounded like the numpy measures.

They are kept to cross-check the numpy measures and for the benchmark: on 1,000,000 x 10 they
are slower (see ``bench/bench_strategies.py``), so the registry uses the numpy ones. modAL is
imported when a function is first called (it takes over a second to import).
"""

from __future__ import annotations

import numpy as np

from strategies.errors import StrategyInputError
from strategies.measures import map_chunks


class FixedProbaEstimator:
    """A stand-in estimator whose ``predict_proba(X)`` returns a given ``(n, C)`` matrix.

    ``X`` must have the same number of rows; anything else is an error (never a silent fallback).
    """

    def __init__(self, proba: np.ndarray) -> None:
        self._proba = proba

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        if len(X) != self._proba.shape[0]:
            raise StrategyInputError(
                "FixedProbaEstimator.predict_proba",
                expected=f"X with {self._proba.shape[0]} rows",
                found=f"{len(X)} rows",
                fix="pass the same rows the estimator was built with",
            )
        return self._proba


def modal_least_confidence(
    proba: np.ndarray, rng: np.random.Generator | None = None, *, chunk_rows: int | None = None
) -> np.ndarray:
    """modAL ``classifier_uncertainty``: ``(n, C)`` -> ``(n,)`` float64, ``1 - max p``."""
    from modAL.uncertainty import classifier_uncertainty

    return map_chunks(proba, lambda c: classifier_uncertainty(*_modal_args(c)), chunk_rows)


def modal_margin(
    proba: np.ndarray, rng: np.random.Generator | None = None, *, chunk_rows: int | None = None
) -> np.ndarray:
    """modAL ``classifier_margin`` turned into a score: ``(n, C)`` -> ``(n,)`` float64,
    ``1 - (p_top1 - p_top2)`` (modAL returns the margin itself, lower = ask first)."""
    from modAL.uncertainty import classifier_margin

    return map_chunks(proba, lambda c: 1.0 - classifier_margin(*_modal_args(c)), chunk_rows)


def modal_entropy(
    proba: np.ndarray, rng: np.random.Generator | None = None, *, chunk_rows: int | None = None
) -> np.ndarray:
    """modAL ``classifier_entropy`` (scipy.stats.entropy, natural log): ``(n, C)`` -> ``(n,)``
    float64. scipy renormalises each row first, which changes nothing for validated rows beyond
    the row-sum tolerance."""
    from modAL.uncertainty import classifier_entropy

    return map_chunks(proba, lambda c: classifier_entropy(*_modal_args(c)), chunk_rows)


def _modal_args(chunk: np.ndarray) -> tuple[FixedProbaEstimator, np.ndarray]:
    # modAL computes in the input dtype; give it float64 so results match the numpy measures.
    chunk64 = chunk.astype(np.float64, copy=False)
    return FixedProbaEstimator(chunk64), chunk64
