"""Query strategies: pure functions over arrays, no model calls, no I/O.

A measure maps ``proba (n_items, n_classes)`` to ``scores (n_items,)`` float64, higher = ask
first; :func:`top_k` turns scores into ordered indices with a seeded tie-break;
:func:`diverse_sample` picks a spread-out cold-start batch from embeddings. Pick a measure by
name with :func:`get_measure`::

    rng = np.random.default_rng(seed)
    scores = get_measure("margin")(proba, rng)
    ask = top_k(scores, 50, rng)

This package imports nothing of the rest of the project; its only error is
:class:`StrategyInputError` (a ``ValueError``).
"""

from strategies.batch import INPUTS, SelectionInputs, typiclust
from strategies.errors import StrategyInputError
from strategies.measures import (
    entropy,
    least_confidence,
    margin,
    random,
    row_sum_tolerance,
    validate_proba,
)
from strategies.modal_measures import modal_entropy, modal_least_confidence, modal_margin
from strategies.registry import (
    COLD_STARTS,
    MEASURES,
    Measure,
    Strategy,
    available,
    canonical_name,
    get_measure,
)
from strategies.selection import diverse_sample, top_k

__all__ = [
    "COLD_STARTS",
    "INPUTS",
    "MEASURES",
    "SelectionInputs",
    "typiclust",
    "Measure",
    "Strategy",
    "StrategyInputError",
    "available",
    "canonical_name",
    "diverse_sample",
    "entropy",
    "get_measure",
    "least_confidence",
    "margin",
    "modal_entropy",
    "modal_least_confidence",
    "modal_margin",
    "random",
    "row_sum_tolerance",
    "top_k",
    "validate_proba",
]
