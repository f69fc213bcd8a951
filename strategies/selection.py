"""Selection: from scores to the indices to ask for, and a diverse cold-start sample.

Selection is separate from measures: a measure says how useful each item is, selection picks
which ones, with an explicit ``numpy.random.Generator`` wherever chance decides (ties,
initialisation), so a seed reproduces a run.
"""

from __future__ import annotations

import warnings
from numbers import Integral

import numpy as np

from strategies.errors import StrategyInputError
from strategies.measures import require_generator

#: From this many items on, ``diverse_sample`` uses MiniBatchKMeans instead of KMeans.
MINIBATCH_FROM = 20_000
_DISTANCE_CHUNK_ROWS = 16_384
_SELECT_CHUNK = 1 << 16


def top_k(scores: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """Indices of the ``k`` highest ``scores (n,)``, ordered by descending score: ``(min(k, n),)``.

    Ties (equal scores, within the selection and at its boundary) are broken uniformly at
    random by ``rng``, so the same seed gives the same answer. ``k > n`` returns all ``n``
    indices, ordered. Finds the ``k``-th largest score by chunked partitions (O(n) time, a
    few MiB of extra memory, no copy of ``scores``) and sorts only the ``k`` selected items.
    Scores may be +/-inf (ask first / last); NaN is an error.
    """
    generator = require_generator(rng, "top_k")
    count = _positive_int(k, "top_k: k")
    values = _as_scores(scores)
    n = values.shape[0]
    if n == 0:
        return np.empty(0, dtype=np.intp)
    count = min(count, n)
    threshold = values.min() if count == n else _kth_largest(values, count)
    above = np.flatnonzero(values > threshold)
    tied = np.flatnonzero(values == threshold)
    needed = count - above.shape[0]
    if needed < tied.shape[0]:
        tied = generator.choice(tied, size=needed, replace=False)
    selected = np.concatenate([above, tied])
    selected = selected[generator.permutation(selected.shape[0])]
    order = np.argsort(-values[selected], kind="stable")  # stable: keeps the shuffled tie order
    return selected[order]


def diverse_sample(embeddings: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """``min(k, n)`` distinct indices of ``embeddings (n, d)`` spread over the space (cold start).

    k-means with ``k`` clusters (KMeans, or MiniBatchKMeans from :data:`MINIBATCH_FROM` items,
    seeded from ``rng``), then the item closest to each centroid; clusters ordered by size,
    largest first, so a prefix of the result covers the densest regions. When there are fewer
    distinct points than ``k`` (duplicates), the remaining picks are drawn uniformly by ``rng``
    from the items not yet picked. ``k >= n`` returns ``arange(n)``. Embeddings are used as
    given: pass L2-normalised rows for cosine geometry.

    Nguyen & Smeulders, "Active learning using pre-clustering", ICML 2004; Yuan, Lin &
    Boyd-Graber, "Cold-start active learning through self-supervised language modeling",
    EMNLP 2020.
    """
    generator = require_generator(rng, "diverse_sample")
    count = _positive_int(k, "diverse_sample: k")
    points = _as_embeddings(embeddings)
    n = points.shape[0]
    if count >= n:
        return np.arange(n, dtype=np.intp)

    from sklearn.cluster import KMeans, MiniBatchKMeans
    from sklearn.exceptions import ConvergenceWarning

    seed = int(generator.integers(0, 2**31 - 1))
    if n < MINIBATCH_FROM:
        model = KMeans(n_clusters=count, n_init=1, random_state=seed)
    else:
        model = MiniBatchKMeans(
            n_clusters=count, n_init=3, random_state=seed, batch_size=max(1024, 4 * count)
        )
    with warnings.catch_warnings():
        # Fewer distinct points than clusters: handled below (empty clusters are filled).
        warnings.simplefilter("ignore", ConvergenceWarning)
        labels = np.asarray(model.fit_predict(points), dtype=np.intp)
    centers = np.asarray(model.cluster_centers_, dtype=np.float64)

    distances = np.empty(n, dtype=np.float64)
    for start in range(0, n, _DISTANCE_CHUNK_ROWS):
        stop = start + _DISTANCE_CHUNK_ROWS
        diff = points[start:stop] - centers[labels[start:stop]]
        distances[start:stop] = np.einsum("ij,ij->i", diff, diff)

    by_cluster = np.lexsort((np.arange(n), distances, labels))  # per cluster: nearest first
    first = np.ones(n, dtype=bool)
    first[1:] = labels[by_cluster[1:]] != labels[by_cluster[:-1]]
    picks = by_cluster[first]  # one per non-empty cluster, in cluster-id order
    sizes = np.bincount(labels, minlength=count)[labels[picks]]
    picks = picks[np.argsort(-sizes, kind="stable")]

    missing = count - picks.shape[0]
    if missing > 0:
        rest = np.setdiff1d(np.arange(n), picks, assume_unique=True)
        picks = np.concatenate([picks, generator.choice(rest, size=missing, replace=False)])
    return picks.astype(np.intp, copy=False)


def _kth_largest(values: np.ndarray, k: int) -> float:
    """The ``k``-th largest of ``values (n,)``, ``1 <= k < n``, with little extra memory.

    Each chunk's ``k`` largest values contain every value of the global top ``k``, so the
    threshold is taken among those candidates (at most about ``n / 8`` of them) instead of
    partitioning a full copy of ``values``.
    """
    n = values.shape[0]
    chunk = max(_SELECT_CHUNK, 8 * k)
    if n <= chunk:
        return np.partition(values, n - k)[n - k]
    candidates = []
    for start in range(0, n, chunk):
        part = values[start : start + chunk]
        if part.shape[0] > k:
            part = np.partition(part, part.shape[0] - k)[part.shape[0] - k :].copy()  # frees chunk
        candidates.append(part)
    pooled = np.concatenate(candidates)
    return np.partition(pooled, pooled.shape[0] - k)[pooled.shape[0] - k]


def _positive_int(value: object, what: str) -> int:
    if isinstance(value, Integral) and not isinstance(value, bool) and int(value) > 0:
        return int(value)
    raise StrategyInputError(
        what,
        expected="a positive integer",
        found=repr(value),
        fix="ask for at least one item (k >= 1); to select nothing, do not call it",
    )


def _as_scores(scores: np.ndarray) -> np.ndarray:
    values = np.asarray(scores)
    if values.ndim != 1:
        raise StrategyInputError(
            "scores",
            expected="a 1-D array (n_items,)",
            found=f"a {values.ndim}-D array of shape {values.shape}",
            fix="pass the output of a measure (one score per item)",
        )
    if values.dtype.kind in "biu":
        values = values.astype(np.float64)
    elif values.dtype.kind != "f":
        raise StrategyInputError(
            "scores",
            expected="real numbers",
            found=f"dtype {values.dtype}",
            fix="convert with scores.astype(np.float64)",
        )
    nan = np.isnan(values)
    if nan.any():
        raise StrategyInputError(
            "scores",
            expected="no NaN",
            found=f"{int(nan.sum())} NaN score(s), first at index {int(np.argmax(nan))}",
            fix="check the probabilities given to the measure; drop or re-score those items",
        )
    return values


def _as_embeddings(embeddings: np.ndarray) -> np.ndarray:
    points = np.asarray(embeddings)
    if points.ndim != 2 or points.shape[1] < 1:
        raise StrategyInputError(
            "embeddings",
            expected="a 2-D array (n_items, dim) with dim >= 1",
            found=f"shape {points.shape}",
            fix="pass the Embedder's output, one row per item",
        )
    if points.dtype.kind != "f":
        raise StrategyInputError(
            "embeddings",
            expected="a floating-point array",
            found=f"dtype {points.dtype}",
            fix="convert with embeddings.astype(np.float32)",
        )
    if not np.isfinite(points).all():
        row = int(np.argmax(~np.isfinite(points).all(axis=1)))
        raise StrategyInputError(
            f"embeddings row {row}",
            expected="finite values",
            found="NaN or inf",
            fix="re-embed those items; a NaN embedding usually means an empty or broken text",
        )
    return points
