"""Seeded resampling of labeled sets, shared by the committee, the ensembles and the data check:
stratified folds and bootstrap samples drawn within each class. Pure numpy."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def stratified_folds(labels: Sequence[object] | np.ndarray, k: int, seed: int) -> np.ndarray:
    """A fold number in ``[0, k)`` per item, each class dealt round-robin over the folds after
    a seeded shuffle (every fold gets ``n_c // k`` or one more of class c)."""
    rng = np.random.default_rng(seed)
    y = np.asarray(labels)
    folds = np.empty(y.shape[0], dtype=np.intp)
    for cls in np.unique(y):
        members = np.flatnonzero(y == cls)
        rng.shuffle(members)
        folds[members] = (np.arange(members.size) + int(rng.integers(k))) % k
    return folds


def class_bootstrap(labels: Sequence[object] | np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Indices of a bootstrap sample drawn with replacement within each class (class sizes
    kept), classes in sorted order (Breiman 1996; query-by-bagging, Abe & Mamitsuka 1998)."""
    y = np.asarray(labels)
    return np.concatenate(
        [rng.choice(np.flatnonzero(y == c), size=int((y == c).sum())) for c in np.unique(y)]
    )
