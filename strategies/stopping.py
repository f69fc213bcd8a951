"""Stopping criteria: pure functions over the history of model versions, each scored on one
fixed sample of unlabeled items (the *stop set*). Each returns a :class:`Verdict`.

- :func:`stabilizing_predictions`: Cohen's kappa between the stop-set predictions of successive
  models stays >= ``threshold`` for ``window`` successive pairs (Bloodgood & Vijay-Shanker, "A
  method for stopping active learning based on stabilizing predictions and the need for
  user-adjustable stopping", CoNLL 2009; their defaults: kappa 0.99, window 3).
- :func:`overall_uncertainty`: the mean uncertainty (1 - max p) of the newest model on the stop
  set is below ``threshold`` (Zhu, Wang & Hovy, "Multi-criteria-based strategy to stop active
  learning for data annotation", COLING 2008).
- :func:`label_budget`: the labels reached ``budget``.

The learning-curve plateau (``loop.forecast``) is the fourth criterion; it needs the curve fit
and lives with the forecast.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from strategies.errors import StrategyInputError


@dataclass(frozen=True)
class Verdict:
    """Whether a criterion fires now, the value it looked at and its threshold."""

    fired: bool
    value: float | None
    threshold: float | None
    detail: str

    def as_dict(self) -> dict[str, object]:
        return {
            "fired": self.fired,
            "value": self.value,
            "threshold": self.threshold,
            "detail": self.detail,
        }


def cohen_kappa(a: np.ndarray, b: np.ndarray) -> float:
    """Cohen's kappa of two label vectors ``(n,)`` (ints); 1.0 when both are one same
    constant (perfect agreement with no chance structure)."""
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape or a.ndim != 1:
        raise StrategyInputError(
            "cohen_kappa",
            expected="two 1-D label vectors of the same length",
            found=f"shapes {a.shape} and {b.shape}",
            fix="score the same stop set with both models",
        )
    if a.shape[0] == 0:
        return 1.0
    labels = np.union1d(a, b)
    ai, bi = np.searchsorted(labels, a), np.searchsorted(labels, b)
    k = labels.shape[0]
    observed = float(np.mean(ai == bi))
    pa = np.bincount(ai, minlength=k) / a.shape[0]
    pb = np.bincount(bi, minlength=k) / b.shape[0]
    expected = float(pa @ pb)
    if expected >= 1.0:
        return 1.0 if observed >= 1.0 else 0.0
    return (observed - expected) / (1.0 - expected)


def stabilizing_predictions(
    predictions: Sequence[np.ndarray], *, threshold: float = 0.99, window: int = 3
) -> Verdict:
    """Fires when the last ``window`` kappas between successive models' stop-set predictions
    are all >= ``threshold``. ``value``: the smallest of those kappas."""
    kappas = [cohen_kappa(p, q) for p, q in zip(predictions, predictions[1:], strict=False)]
    if len(kappas) < window:
        return Verdict(
            False,
            min(kappas[-window:]) if kappas else None,
            threshold,
            f"{len(kappas)} of {window} successive model pairs so far",
        )
    last = min(kappas[-window:])
    return Verdict(
        last >= threshold,
        last,
        threshold,
        f"kappa of the last {window} successive models: "
        + ", ".join(f"{x:.4f}" for x in kappas[-window:]),
    )


def overall_uncertainty(mean_uncertainty: Sequence[float], *, threshold: float = 0.1) -> Verdict:
    """Fires when the newest model's mean ``1 - max p`` on the stop set is below
    ``threshold``."""
    if not mean_uncertainty:
        return Verdict(False, None, threshold, "no model yet")
    last = float(mean_uncertainty[-1])
    return Verdict(last < threshold, last, threshold, f"mean uncertainty {last:.4f}")


def label_budget(n_labels: int, *, budget: int | None) -> Verdict:
    """Fires when ``n_labels`` reached ``budget`` (never without a budget)."""
    if budget is None:
        return Verdict(False, float(n_labels), None, "no budget set")
    return Verdict(
        n_labels >= budget, float(n_labels), float(budget), f"{n_labels} of {budget} labels"
    )
