"""Uncertainty measures: ``proba (n_items, n_classes)`` -> ``scores (n_items,)`` float64.

Higher score = ask first, for every measure. Every measure validates its input (2-D, at least
2 columns, floating dtype, finite, non-negative, rows summing to 1 within
:func:`row_sum_tolerance`) and returns an empty array for an empty pool.

The input is processed in row chunks of about :data:`CHUNK_BYTES`, so the extra memory beyond the
``(n_items,)`` float64 result stays near one chunk whatever the pool size, and a float32 matrix
is upcast one chunk at a time, never as a whole. With few classes the row reductions run as a
loop over columns (contiguous vector operations on a chunk that stays in cache), which is 2-4x
faster than numpy's reductions along a short ``axis=1``.

Reference for the family: B. Settles, "Active Learning Literature Survey", 2009, section 3.1.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from numbers import Integral

import numpy as np

from strategies.errors import StrategyInputError

#: Target size in bytes of one row chunk of the input (the working set of one step).
CHUNK_BYTES = 1 << 19
#: Bounds on the rows of one chunk: per-column vectors of a chunk must stay in cache.
MIN_CHUNK_ROWS, MAX_CHUNK_ROWS = 256, 8192
#: Up to this many classes, row sums and maxima loop over columns; above, they use ``axis=1``.
COLUMN_LOOP_MAX_CLASSES = 24
#: Up to this many classes, the top-2 of a row is found by a column loop; above, by partition.
TOP2_LOOP_MAX_CLASSES = 128

_Kernel = Callable[[np.ndarray], np.ndarray]


def row_sum_tolerance(dtype: np.dtype) -> float:
    """Absolute tolerance on ``|row sum - 1|`` for a probability matrix of ``dtype``."""
    return 1e-2 if np.dtype(dtype).itemsize <= 2 else 1e-4


def least_confidence(
    proba: np.ndarray, rng: np.random.Generator | None = None, *, chunk_rows: int | None = None
) -> np.ndarray:
    """``1 - max_c p(c|x)``: ``(n, C)`` -> ``(n,)`` float64 in ``[0, 1 - 1/C]``. ``rng`` unused.

    Lewis & Gale, "A sequential algorithm for training text classifiers", SIGIR 1994;
    Culotta & McCallum, "Reducing labeling effort for structured prediction tasks", AAAI 2005.
    """
    return map_chunks(proba, _least_confidence_kernel, chunk_rows)


def margin(
    proba: np.ndarray, rng: np.random.Generator | None = None, *, chunk_rows: int | None = None
) -> np.ndarray:
    """``1 - (p_top1 - p_top2)``: ``(n, C)`` -> ``(n,)`` float64 in ``[0, 1]``. ``rng`` unused.

    Rows with equal margins get exactly equal scores; their order is left to the selection's
    seeded tie-break (:func:`strategies.selection.top_k`).
    Scheffer, Decomain & Wrobel, "Active hidden Markov models for information extraction",
    IDA 2001.
    """
    return map_chunks(proba, _margin_kernel, chunk_rows)


def entropy(
    proba: np.ndarray, rng: np.random.Generator | None = None, *, chunk_rows: int | None = None
) -> np.ndarray:
    """Shannon entropy ``-sum_c p log p`` (natural log, ``0 log 0 = 0``): ``(n, C)`` -> ``(n,)``
    float64 in ``[0, log C]``. ``rng`` unused.

    Shannon, "A mathematical theory of communication", 1948; as a query strategy:
    Settles & Craven, "An analysis of active learning strategies for sequence labeling tasks",
    EMNLP 2008.
    """
    return map_chunks(proba, _entropy_kernel, chunk_rows)


def random(
    proba: np.ndarray, rng: np.random.Generator | None = None, *, chunk_rows: int | None = None
) -> np.ndarray:
    """Uniform ``[0, 1)`` scores from ``rng``: ``(n, C)`` -> ``(n,)`` float64 (the baseline).

    ``proba`` is validated like every other measure and only its length is used; the same
    ``rng`` state gives the same scores.
    """
    generator = require_generator(rng, "the 'random' measure")
    checked = validate_proba(proba, chunk_rows=chunk_rows)
    return generator.random(checked.shape[0])


def validate_proba(proba: np.ndarray, *, chunk_rows: int | None = None) -> np.ndarray:
    """Check ``proba`` like every measure does, chunk by chunk; return it as an ndarray.

    Raises :class:`StrategyInputError` naming the first offending row.
    """
    array = _as_proba(proba)
    tol = row_sum_tolerance(array.dtype)
    for start, chunk in _chunks(array, chunk_rows):
        _check_chunk(chunk, start, tol)
    return array


def require_generator(rng: object, who: str) -> np.random.Generator:
    """Return ``rng`` if it is a ``numpy.random.Generator``; raise StrategyInputError otherwise."""
    if isinstance(rng, np.random.Generator):
        return rng
    raise StrategyInputError(
        f"{who} needs a random generator",
        expected="a numpy.random.Generator",
        found=f"{type(rng).__name__} {rng!r}"[:120],
        fix="pass np.random.default_rng(seed) with the run's seed",
    )


# -- chunked evaluation ------------------------------------------------------------------------


def map_chunks(proba: np.ndarray, kernel: _Kernel, chunk_rows: int | None = None) -> np.ndarray:
    """Validate ``proba (n, C)`` and apply ``kernel`` (``(rows, C)`` -> ``(rows,)``) chunk by chunk.

    Returns ``(n,)`` float64. The kernel must not write into its argument (a view of ``proba``).
    """
    array = _as_proba(proba)
    tol = row_sum_tolerance(array.dtype)
    out = np.empty(array.shape[0], dtype=np.float64)
    for start, chunk in _chunks(array, chunk_rows):
        _check_chunk(chunk, start, tol)
        out[start : start + chunk.shape[0]] = kernel(chunk)
    return out


def _chunks(array: np.ndarray, chunk_rows: int | None) -> Iterator[tuple[int, np.ndarray]]:
    n_rows, n_classes = array.shape
    if chunk_rows is None:
        rows = CHUNK_BYTES // max(1, n_classes * array.itemsize)
        rows = min(MAX_CHUNK_ROWS, max(MIN_CHUNK_ROWS, rows))
    elif (
        isinstance(chunk_rows, Integral)
        and not isinstance(chunk_rows, bool)
        and int(chunk_rows) > 0
    ):
        rows = int(chunk_rows)
    else:
        raise StrategyInputError(
            "chunk_rows",
            expected="a positive integer or None",
            found=repr(chunk_rows),
            fix="leave chunk_rows unset (None) to size chunks automatically",
        )
    for start in range(0, n_rows, rows):
        yield start, array[start : start + rows]


def _as_proba(proba: np.ndarray) -> np.ndarray:
    try:
        array = np.asarray(proba)
    except (TypeError, ValueError) as exc:
        raise StrategyInputError(
            "proba",
            expected="an array of shape (n_items, n_classes)",
            found=f"{type(proba).__name__} that numpy cannot read as an array ({exc})",
            fix="pass the classifier's predict_proba output as a numpy array",
        ) from exc
    if array.ndim != 2:
        raise StrategyInputError(
            "proba",
            expected="a 2-D array of shape (n_items, n_classes)",
            found=f"a {array.ndim}-D array of shape {array.shape}",
            fix="pass predict_proba output; for a single item use proba.reshape(1, -1)",
        )
    if array.shape[1] < 2:
        raise StrategyInputError(
            "proba",
            expected="at least 2 columns (one probability per class)",
            found=f"{array.shape[1]} column(s), shape {array.shape}",
            fix=(
                "pass the probability of every class; for a binary model that gives only "
                "p(positive), use np.column_stack([1 - p, p])"
            ),
        )
    if array.dtype.kind != "f":
        raise StrategyInputError(
            "proba",
            expected="a floating-point array (float16, float32 or float64)",
            found=f"dtype {array.dtype}",
            fix="convert with proba.astype(np.float64)",
        )
    return array


def _check_chunk(chunk: np.ndarray, start: int, tol: float) -> None:
    if chunk.shape[0] == 0:
        return
    with np.errstate(over="ignore", invalid="ignore"):  # inf/NaN are reported below
        sums = _row_sums(chunk)
    if not np.isfinite(sums).all():
        bad_rows = ~np.isfinite(chunk).all(axis=1)
        if bad_rows.any():
            row = int(np.argmax(bad_rows))
            values = chunk[row][~np.isfinite(chunk[row])]
            raise StrategyInputError(
                f"proba row {start + row}",
                expected="finite probabilities",
                found=f"{float(values[0])} ({int(bad_rows.sum())} row(s) with NaN/inf among "
                f"rows {start}..{start + chunk.shape[0] - 1})",
                fix=(
                    "check the model output: NaN comes from a diverged model or a 0/0 "
                    "normalisation; drop or re-score those items before selection"
                ),
            )
    lowest = chunk.min()
    if lowest < 0:
        row = int(np.argmax((chunk < 0).any(axis=1)))
        raise StrategyInputError(
            f"proba row {start + row}",
            expected="non-negative probabilities",
            found=f"{float(chunk[row].min())!r}",
            fix=(
                "pass probabilities, not logits or decision scores: apply a softmax "
                "(scipy.special.softmax(logits, axis=1))"
            ),
        )
    deviation = np.abs(sums - 1.0)
    if not deviation.max() <= tol:
        row = int(np.argmax(~(deviation <= tol)))
        raise StrategyInputError(
            f"proba row {start + row}",
            expected=f"each row to sum to 1 within {tol:g}",
            found=f"a row sum of {float(sums[row])!r}",
            fix=(
                "pass probabilities, not raw scores: apply a softmax to logits, or "
                "renormalise with proba / proba.sum(axis=1, keepdims=True)"
            ),
        )


# -- kernels: (rows, C) chunk -> (rows,) float64 --------------------------------------------------


def _row_sums(chunk: np.ndarray) -> np.ndarray:
    if chunk.shape[1] > COLUMN_LOOP_MAX_CLASSES:
        return chunk.sum(axis=1, dtype=np.float64)
    sums = chunk[:, 0].astype(np.float64)
    for j in range(1, chunk.shape[1]):
        sums += chunk[:, j]
    return sums


def _row_max(chunk: np.ndarray) -> np.ndarray:
    if chunk.shape[1] > COLUMN_LOOP_MAX_CLASSES:
        return chunk.max(axis=1)
    top = chunk[:, 0].copy()
    for j in range(1, chunk.shape[1]):
        np.maximum(top, chunk[:, j], out=top)
    return top


def _row_top2(chunk: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Largest and second largest value of each row (equal values count twice)."""
    n_classes = chunk.shape[1]
    if n_classes > TOP2_LOOP_MAX_CLASSES:
        part = np.partition(chunk, (n_classes - 2, n_classes - 1), axis=1)
        return part[:, -1], part[:, -2]
    first = chunk[:, 0].copy()
    second = np.full(chunk.shape[0], -np.inf, dtype=chunk.dtype)
    low = np.empty_like(first)
    for j in range(1, n_classes):
        column = chunk[:, j]
        np.minimum(first, column, out=low)
        np.maximum(second, low, out=second)
        np.maximum(first, column, out=first)
    return first, second


def _least_confidence_kernel(chunk: np.ndarray) -> np.ndarray:
    return 1.0 - _row_max(chunk).astype(np.float64)


def _margin_kernel(chunk: np.ndarray) -> np.ndarray:
    first, second = _row_top2(chunk)
    return 1.0 - (first.astype(np.float64) - second.astype(np.float64))


def _entropy_kernel(chunk: np.ndarray) -> np.ndarray:
    logs = chunk.astype(np.float64)  # a copy: the caller's array is never written
    np.maximum(logs, np.finfo(np.float64).tiny, out=logs)  # 0 log 0 = 0 * log(tiny) = 0
    np.log(logs, out=logs)
    logs *= chunk
    total = _row_sums(logs)
    return np.subtract(0.0, total, out=total)  # 0 - x, so a zero entropy is +0.0, not -0.0
