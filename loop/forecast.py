"""Is more data worth it? Fit a saturating learning curve and forecast from it.

The curve is the inverse power law ``acc(n) = a - b * (n / s)^(-c)`` with ``a <= 1`` (the
asymptote: the accuracy with unlimited labels of this kind), ``b > 0`` (the gap to it at the
reference size ``s``, the largest measured size) and ``c > 0`` (how fast the gap closes).
Fitted by weighted non-linear least squares, the weights being the standard errors of the
points' repeats (moderated, see ``_sigma``), as in Figueroa et al. 2012, "Predicting sample
size required for classification performance" (BMC Medical Informatics and Decision Making
12:8); the power-law shape of learning curves is also in Mukherjee et al. 2003 and Hestness et al. 2017.

The uncertainty band is a bootstrap over the repeats: every point's repeats are redrawn with
replacement from the repeats' deviations around their point's mean (pooled over the points,
since 3 repeats say little about one point's spread), the curve is refitted, and percentiles of
the refitted forecasts give the band (with one repeat per point, the fit's residuals are
resampled instead). The band covers the uncertainty of the *mean* curve under the power-law
assumption, on the held-out data measured; not the spread of one model, nor the sampling error
of a small held-out set (shared by every point).

Verdict rule (:data:`PLATEAU_GROWTH`, :data:`PLATEAU_GAIN`): when 50% more labels than now are
expected to add less than 0.5 accuracy points, the verdict is "plateau reached", otherwise
"labels still pay". Degenerate input (fewer than 3 sizes, a flat or falling curve, a fit that
fails) gives ``ok=False``, the verdict "no forecast" and a reason, never a number.

Pure numpy/scipy: no model libraries, no I/O.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from loop.errors import ConfigError, DataError, ModelError

PLATEAU_GROWTH = 0.5  # the verdict looks at 50% more labels than now ...
PLATEAU_GAIN = 0.005  # ... and calls it a plateau below half an accuracy point of expected gain
VERDICT_PAYS = "labels still pay"
VERDICT_PLATEAU = "plateau reached"
VERDICT_NONE = "no forecast"
MIN_SIZES = 3  # three parameters
PRIOR_DOF = 4.0  # weight of the pooled variance when weighting the points (see _sigma)

# parameter bounds of (a, b, c); b is the gap at the largest measured size, so it is <= 1 for
# any curve whose accuracies lie in [0, 1]
_LOWER = np.array([0.0, 1e-9, 1e-3])
_UPPER = np.array([1.0, 2.0, 5.0])
_C_GRID = np.geomspace(0.02, 4.0, 40)
_FAR = 4.0  # a forecast this many times beyond the largest measured size gets a note


@dataclass(frozen=True, slots=True)
class CurvePoint:
    """Accuracy measured ``len(accuracies)`` times (repeats) with ``n_labels`` training labels."""

    n_labels: int
    accuracies: tuple[float, ...]

    @property
    def mean(self) -> float:
        return float(np.mean(self.accuracies))

    @property
    def std(self) -> float:
        """Sample standard deviation of the repeats (0 for one repeat)."""
        k = len(self.accuracies)
        return float(np.std(self.accuracies, ddof=1)) if k > 1 else 0.0

    @property
    def sem(self) -> float:
        """Standard error of the mean (0 for one repeat)."""
        return self.std / math.sqrt(len(self.accuracies))


#: labeled evaluation-sample items from which a model version's eval accuracy is trusted over
#: its test accuracy (for promotion and for the learning curve of the model versions)
MIN_EVAL_ITEMS = 20


def version_points(
    metrics: Sequence[tuple[int, Mapping[str, Any]]],
) -> tuple[str, list[CurvePoint]]:
    """The learning curve of a project's model versions: ``(split, points)`` from ``(n_labels,
    metrics)`` per version, on the evaluation sample once a version was measured on >=
    :data:`MIN_EVAL_ITEMS` of its items, else on the test split (one repeat per version)."""
    split = "eval" if any((m.get("eval_n") or 0) >= MIN_EVAL_ITEMS for _, m in metrics) else "test"
    points = [
        CurvePoint(int(n), (float(m[f"{split}_accuracy"]),))
        for n, m in metrics
        if m.get(f"{split}_accuracy") is not None and n > 0
    ]
    return split, points


def points_from_runs(labels: Sequence[int], runs: Sequence[Sequence[float]]) -> list[CurvePoint]:
    """Points from ``runs`` (one accuracy sequence per repeat, aligned with ``labels``)."""
    for r in runs:
        if len(r) != len(labels):
            raise DataError(
                f"every run needs one accuracy per label count ({len(labels)}), found {len(r)}.",
                "pass runs measured at the same label counts.",
            )
    return [CurvePoint(int(n), tuple(float(r[i]) for r in runs)) for i, n in enumerate(labels)]


@dataclass(frozen=True, slots=True)
class PowerLaw:
    """``acc(n) = a - b * (n / scale)^(-c)``; increasing and concave in ``n``, limit ``a``."""

    a: float
    b: float
    c: float
    scale: float

    def __call__(self, n: Any) -> np.ndarray:
        x = np.asarray(n, dtype=float) / self.scale
        return self.a - self.b * x ** (-self.c)

    def slope(self, n: Any) -> np.ndarray:
        """d acc / d n (accuracy per label)."""
        x = np.asarray(n, dtype=float) / self.scale
        return self.b * self.c / self.scale * x ** (-self.c - 1.0)

    def labels_for(self, target: float) -> float:
        """Labels at which the curve reaches ``target``; ``inf`` when ``target >= a``."""
        if target >= self.a:
            return math.inf
        return float(self.scale * (self.b / (self.a - target)) ** (1.0 / self.c))

    @property
    def b_raw(self) -> float:
        """``b`` for the unscaled form ``a - b * n^(-c)``."""
        return float(self.b * self.scale**self.c)


def _model(n: np.ndarray, a: float, b: float, c: float, scale: float) -> np.ndarray:
    return a - b * (n / scale) ** (-c)


def _jacobian(n: np.ndarray, a: float, b: float, c: float, scale: float) -> np.ndarray:
    """``(k, 3)``: derivatives of the model by a, b and c."""
    x = n / scale
    p = x ** (-c)
    return np.stack([np.ones_like(x), -p, b * p * np.log(x)], axis=1)


def _grid_start(n: np.ndarray, y: np.ndarray, w: np.ndarray, scale: float) -> np.ndarray:
    """Initial (a, b, c): for each c on a grid the model is linear in (a, b); weighted least
    squares with a <= 1, b > 0 by clamping; the c with the smallest weighted error wins."""
    best, best_err = None, math.inf
    sw = np.sqrt(w)
    for c in _C_GRID:
        x = (n / scale) ** (-c)
        design = np.stack([np.ones_like(x), -x], axis=1) * sw[:, None]
        (a, b), *_ = np.linalg.lstsq(design, y * sw, rcond=None)
        b = float(np.clip(b, 1e-6, _UPPER[1] * 0.99))
        a = float(np.clip(a, 1e-6, 1.0 - 1e-9))
        err = float(np.sum(w * (y - _model(n, a, b, c, scale)) ** 2))
        if best is None or err < best_err:
            best, best_err = np.array([a, b, c]), err
    return best if best is not None else np.array([0.9, 0.1, 0.5])


def fit_power_law(
    n_labels: ArrayLike,
    accuracy: ArrayLike,
    sigma: ArrayLike | None = None,
    *,
    start: ArrayLike | None = None,
    scale: float | None = None,
) -> PowerLaw:
    """Fit ``acc(n) = a - b (n/scale)^(-c)`` to ``(n_labels, accuracy)``, shape ``(k,)`` each
    (``k >= 3`` distinct sizes), weighted by ``sigma`` (standard errors, ``(k,)``) when given.
    ``scale`` defaults to ``max(n_labels)``. Raises ModelError when the fit fails."""
    from scipy.optimize import OptimizeWarning, curve_fit

    n = np.asarray(n_labels, dtype=float)
    y = np.asarray(accuracy, dtype=float)
    if n.shape != y.shape or n.ndim != 1:
        raise DataError(
            f"n_labels and accuracy must be 1-d and of equal length, got {n.shape} and {y.shape}.",
            "pass one accuracy per label count.",
        )
    if len(np.unique(n)) < MIN_SIZES:
        raise DataError(
            f"a 3-parameter curve needs >= {MIN_SIZES} distinct label counts, got {sorted(set(n.tolist()))}.",
            "measure accuracy at more label counts.",
        )
    s = float(scale if scale is not None else n.max())
    sig = None if sigma is None else np.asarray(sigma, dtype=float)
    w = np.ones_like(y) if sig is None else 1.0 / sig**2
    p0 = np.asarray(start, dtype=float) if start is not None else _grid_start(n, y, w, s)
    p0 = np.clip(p0, _LOWER + 1e-9, _UPPER - 1e-9)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", OptimizeWarning)
            popt, _ = curve_fit(
                lambda x, a, b, c: _model(x, a, b, c, s),
                n,
                y,
                p0=p0,
                sigma=sig,
                bounds=(_LOWER, _UPPER),
                method="trf",
                jac=lambda x, a, b, c: _jacobian(x, a, b, c, s),
                max_nfev=2000,
            )
    except (RuntimeError, ValueError) as e:
        raise ModelError(
            f"the learning-curve fit did not converge ({e}).",
            "measure more label counts or more repeats.",
        ) from None
    if not np.all(np.isfinite(popt)):
        raise ModelError(
            f"the learning-curve fit gave non-finite parameters {popt.tolist()}.",
            "measure more label counts or more repeats.",
        )
    return PowerLaw(float(popt[0]), float(popt[1]), float(popt[2]), s)


@dataclass(frozen=True)
class Forecast:
    """What more labels are expected to bring. Accuracies are fractions in [0, 1]; every
    ``*_band`` is ``(low, high)`` at ``level``; label counts are totals (not increments)."""

    ok: bool
    verdict: str  # VERDICT_PAYS | VERDICT_PLATEAU | VERDICT_NONE
    reason: str  # why the verdict (or why no forecast)
    points: tuple[CurvePoint, ...]
    n_current: int
    plus: int
    target: float | None
    level: float
    fit: PowerLaw | None = None
    band_method: str | None = None  # "repeats" | "residuals" | None (no band)
    n_boot: int = 0
    n_boot_ok: int = 0
    current: float | None = None  # the fitted accuracy at n_current
    asymptote: float | None = None
    asymptote_band: tuple[float, float] | None = None
    expected: float | None = None  # at n_current + plus
    expected_band: tuple[float, float] | None = None
    gain_per_100: float | None = None  # accuracy per 100 more labels at n_current (the slope)
    gain_per_100_band: tuple[float, float] | None = None
    plateau_gain: float | None = None  # expected gain of PLATEAU_GROWTH more labels
    plateau_gain_band: tuple[float, float] | None = None
    labels_for_target: float | None = None  # inf: the fitted asymptote is below the target
    labels_for_target_band: tuple[float, float] | None = None
    notes: tuple[str, ...] = ()
    # the fitted curve and its band on a grid of label counts, for plots
    curve: Mapping[str, tuple[float, ...]] = field(default_factory=dict)
    boots: tuple[PowerLaw, ...] = ()  # the bootstrap refits (not written to JSON)

    def at(self, n_labels: float) -> tuple[float, tuple[float, float] | None]:
        """The fitted accuracy at ``n_labels`` and its band (None without one)."""
        if self.fit is None:
            raise ModelError(f"no forecast: {self.reason}", "see the reason.")
        band = None
        if self.boots:
            band = _quantiles(np.array([float(b(n_labels)) for b in self.boots]), self.level)
        return float(self.fit(n_labels)), band

    def labels_for(self, target: float) -> tuple[float, tuple[float, float] | None]:
        """Labels to reach ``target`` (``inf``: not reachable) and its band."""
        if self.fit is None:
            raise ModelError(f"no forecast: {self.reason}", "see the reason.")
        band = None
        if self.boots:
            band = _quantiles(np.array([b.labels_for(target) for b in self.boots]), self.level)
        return self.fit.labels_for(target), band

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe: ``inf`` becomes None (with ``labels_for_target_reachable`` False)."""

        def num(x: float | None) -> float | None:
            return None if x is None or not math.isfinite(x) else float(x)

        def band(b: tuple[float, float] | None) -> list[float | None] | None:
            return None if b is None else [num(b[0]), num(b[1])]

        return {
            "ok": self.ok,
            "verdict": self.verdict,
            "reason": self.reason,
            "rule": (
                f"plateau when {PLATEAU_GROWTH:.0%} more labels are expected to add less than "
                f"{PLATEAU_GAIN * 100:g} accuracy points"
            ),
            "points": [
                {
                    "n_labels": p.n_labels,
                    "accuracies": list(p.accuracies),
                    "mean": p.mean,
                    "std": p.std,
                    "sem": p.sem,
                }
                for p in self.points
            ],
            "n_current": self.n_current,
            "plus": self.plus,
            "target": self.target,
            "level": self.level,
            "fit": None
            if self.fit is None
            else {
                "formula": "a - b * (n / scale)^(-c)",
                "a": self.fit.a,
                "b": self.fit.b,
                "c": self.fit.c,
                "scale": self.fit.scale,
            },
            "band_method": self.band_method,
            "n_boot": self.n_boot,
            "n_boot_ok": self.n_boot_ok,
            "current": num(self.current),
            "asymptote": num(self.asymptote),
            "asymptote_band": band(self.asymptote_band),
            "expected": num(self.expected),
            "expected_band": band(self.expected_band),
            "gain_per_100": num(self.gain_per_100),
            "gain_per_100_band": band(self.gain_per_100_band),
            "plateau_gain": num(self.plateau_gain),
            "plateau_gain_band": band(self.plateau_gain_band),
            "labels_for_target": num(self.labels_for_target),
            "labels_for_target_reachable": None
            if self.labels_for_target is None
            else math.isfinite(self.labels_for_target),
            "labels_for_target_band": band(self.labels_for_target_band),
            "notes": list(self.notes),
            "curve": {k: list(v) for k, v in self.curve.items()},
        }


def merge_points(points: Iterable[CurvePoint]) -> tuple[CurvePoint, ...]:
    """Validate and sort points; points with the same ``n_labels`` are pooled."""
    by_n: dict[int, list[float]] = {}
    for p in points:
        if not isinstance(p.n_labels, int | np.integer) or p.n_labels < 1:
            raise DataError(
                f"a curve point needs n_labels >= 1 (an integer), found {p.n_labels!r}.",
                "pass the number of training labels of each point.",
            )
        acc = [float(a) for a in p.accuracies]
        if not acc:
            raise DataError(
                f"the point at {p.n_labels} labels has no accuracy.", "measure it or drop it."
            )
        bad = [a for a in acc if not (math.isfinite(a) and 0.0 <= a <= 1.0)]
        if bad:
            raise DataError(
                f"accuracies are fractions in [0, 1]; the point at {p.n_labels} labels has {bad}.",
                "pass accuracies as fractions (0.83, not 83) and drop failed measurements.",
            )
        by_n.setdefault(int(p.n_labels), []).extend(acc)
    return tuple(CurvePoint(n, tuple(v)) for n, v in sorted(by_n.items()))


def _sigma(points: Sequence[CurvePoint]) -> np.ndarray | None:
    """Standard errors of the points' means for weighting, ``(k,)``, or None (unweighted) when
    no point's repeats differ. A few repeats estimate a point's variance poorly (and repeats
    that happen to agree would get unbounded weight), so each point's variance is shrunk
    towards the variance pooled over all points, with :data:`PRIOR_DOF` degrees of freedom
    (the moderated variances of Smyth 2004, "Linear models and empirical Bayes methods for
    assessing differential expression in microarray experiments")."""
    k = np.array([len(p.accuracies) for p in points], dtype=float)
    var = np.array([p.std**2 for p in points])
    dof = k - 1.0
    if not np.any(var > 0):
        return None
    pooled = float(np.sum(dof * var) / np.sum(dof))
    moderated = (dof * var + PRIOR_DOF * pooled) / (dof + PRIOR_DOF)
    return np.maximum(np.sqrt(moderated / k), 1e-4)


def _quantiles(values: np.ndarray, level: float) -> tuple[float, float]:
    lo, hi = np.quantile(values, [(1 - level) / 2, (1 + level) / 2], method="inverted_cdf")
    return float(lo), float(hi)


def forecast(
    points: Iterable[CurvePoint],
    *,
    n_current: int | None = None,
    plus: int | None = None,
    target: float | None = None,
    level: float = 0.9,
    n_boot: int = 400,
    seed: int = 0,
) -> Forecast:
    """Fit the learning curve to ``points`` and forecast.

    ``n_current`` is the number of labels now (default: the largest measured size; larger when
    the points were measured on a part of the labels). ``plus``: the forecast is for
    ``n_current + plus`` labels (default ``PLATEAU_GROWTH * n_current``). ``target``: an
    accuracy in (0, 1] to find the labels for. ``level``: the band's coverage. ``n_boot``
    bootstrap refits (0: no band), seeded by ``seed``.
    """
    if not 0.0 < level < 1.0:
        raise ConfigError(f"level must be in (0, 1), got {level}.", "use e.g. 0.9.")
    if n_boot < 0:
        raise ConfigError(f"n_boot must be >= 0, got {n_boot}.", "use e.g. 400 (0: no band).")
    if target is not None and not (0.0 < target <= 1.0):
        raise ConfigError(
            f"the target accuracy must be a fraction in (0, 1], got {target}.",
            "pass e.g. --target 0.85 for 85%.",
        )
    if plus is not None and plus < 0:
        raise ConfigError(f"plus must be >= 0 labels, got {plus}.", "pass a number of labels.")
    pts = merge_points(points)
    n_max = pts[-1].n_labels if pts else 0
    now = int(n_current) if n_current is not None else n_max
    if pts and now < n_max:
        raise ConfigError(
            f"n_current ({now}) is below the largest measured size ({n_max}).",
            "pass the number of labels available now (>= every measured size).",
        )
    more = int(plus) if plus is not None else max(1, int(round(PLATEAU_GROWTH * now)))
    base: dict[str, Any] = dict(points=pts, n_current=now, plus=more, target=target, level=level)

    def none(reason: str) -> Forecast:
        return Forecast(ok=False, verdict=VERDICT_NONE, reason=reason, **base)

    sizes = [p.n_labels for p in pts]
    if len(pts) < MIN_SIZES:
        return none(
            f"a forecast needs accuracy at >= {MIN_SIZES} different label counts (the curve has "
            f"3 parameters); got {len(pts)} ({sizes}). Measure more fractions."
        )
    n = np.array(sizes, dtype=float)
    y = np.array([p.mean for p in pts])
    if float(y.max() - y.min()) <= 1e-9:
        return none(
            f"accuracy is {y[0]:.4f} at every label count ({sizes[0]}..{sizes[-1]}): a flat "
            "curve says nothing about more labels. Check the labels and the held-out data "
            "(a constant model, or a task already solved)."
        )
    # does it rise at all? (the slope of accuracy on log labels, unweighted: robust to a point
    # whose few repeats happen to agree)
    slope = float(np.polyfit(np.log(n), y, 1)[0])
    if slope <= 0:
        return none(
            f"accuracy does not rise with labels over the measured range ({y[0]:.4f} at "
            f"{sizes[0]} -> {y[-1]:.4f} at {sizes[-1]} labels): there is no learning curve to "
            "extrapolate. Check the labels and the held-out data; labels of this kind are not "
            "paying at these sizes."
        )
    sigma = _sigma(pts)
    try:
        fit = fit_power_law(n, y, sigma)
    except ModelError as e:
        return none(f"{e.what} {e.fix}")

    notes: list[str] = []
    if len(pts) == MIN_SIZES:
        notes.append(
            f"only {MIN_SIZES} label counts for 3 parameters: the curve passes through the "
            "points; the band comes from the repeats alone."
        )
    if fit.a >= _UPPER[0] - 1e-3:
        notes.append(
            "the fitted asymptote sits at its bound 1.0: the measured sizes do not pin down the "
            "ceiling (the curve still climbs like a logarithm), so read the asymptote and far "
            "targets as optimistic."
        )
    if now + more > _FAR * n_max:
        notes.append(
            f"the forecast at {now + more} labels is {(now + more) / n_max:.1f}x the largest "
            f"measured size ({n_max}): it rests on the power-law shape more than on data."
        )

    # -- bootstrap ---------------------------------------------------------------------------
    rng = np.random.default_rng(seed)
    method: str | None = None
    boots: list[PowerLaw] = []
    reps = [np.asarray(p.accuracies) for p in pts]
    has_repeats = any(len(r) > 1 and np.ptp(r) > 0 for r in reps)
    resid = y - fit(n)
    if n_boot and has_repeats:
        method = "repeats"
    elif n_boot and len(pts) > MIN_SIZES and np.ptp(resid) > 1e-9:
        method = "residuals"
    elif n_boot:
        notes.append(
            "no band: one repeat per point and no residual spread to resample; measure with "
            "repeats >= 2."
        )
    # the repeats' deviations from their point's mean, pooled over points (a few repeats per
    # point are too few to estimate each point's spread: bands from them alone cover the truth
    # ~65% of the time at a 90% level on synthetic curves, pooled ~85-95%); scaled by
    # sqrt(k / (k - 1)) because deviations from a sample mean are smaller than the noise
    pool = np.concatenate(
        [(r - r.mean()) * math.sqrt(len(r) / (len(r) - 1)) for r in reps if len(r) > 1]
        or [np.zeros(0)]
    )
    start = np.array([fit.a, fit.b, fit.c])
    for _ in range(n_boot if method else 0):
        if method == "repeats":
            yb = np.array([r.mean() + rng.choice(pool, len(r)).mean() for r in reps])
            yb = np.clip(yb, 0.0, 1.0)
        else:
            yb = np.clip(fit(n) + rng.choice(resid, size=len(resid)), 0.0, 1.0)
        try:
            boots.append(fit_power_law(n, yb, sigma, start=start, scale=fit.scale))
        except (ModelError, DataError):
            continue
    if method and len(boots) < max(10, n_boot // 2):
        notes.append(f"no band: only {len(boots)} of {n_boot} bootstrap refits converged.")
        method = None

    def band_of(f: Any) -> tuple[float, float] | None:
        if not method:
            return None
        return _quantiles(np.array([f(b) for b in boots], dtype=float), level)

    target_n = now + more
    grow = now * (1.0 + PLATEAU_GROWTH)
    current = float(fit(now))
    expected = float(fit(target_n))
    gain = float(fit(grow) - current)
    per100 = float(fit.slope(now) * 100.0)
    plateau_band = band_of(lambda b: float(b(grow) - b(now)))
    labels_t: float | None = None
    labels_t_band = None
    if target is not None:
        labels_t = fit.labels_for(target)
        labels_t_band = band_of(lambda b: b.labels_for(target))
        if not math.isfinite(labels_t):
            notes.append(
                f"the fitted asymptote {fit.a:.4f} is below the target {target:.4f}: more labels "
                "of this kind are not expected to reach it (a better model or cleaner labels might)."
            )
        elif labels_t <= now:
            notes.append(f"the target {target:.4f} is reached already at the current size.")
        elif labels_t > _FAR * n_max:
            notes.append(
                f"the target needs {labels_t / n_max:.1f}x the largest measured size: a far "
                "extrapolation."
            )

    if gain < PLATEAU_GAIN:
        verdict = VERDICT_PLATEAU
        why = "less than"
    else:
        verdict = VERDICT_PAYS
        why = "at least"
    band_txt = (
        f" [{plateau_band[0] * 100:.2f}, {plateau_band[1] * 100:.2f}]" if plateau_band else ""
    )
    reason = (
        f"+{PLATEAU_GROWTH:.0%} labels ({now} -> {int(round(grow))}) is expected to add "
        f"{gain * 100:.2f} accuracy points{band_txt}, {why} the {PLATEAU_GAIN * 100:g}-point rule."
    )

    hi_n = max(float(target_n), float(n_max))
    if labels_t is not None and math.isfinite(labels_t):
        hi_n = max(hi_n, min(labels_t, 10.0 * hi_n))
    grid = np.geomspace(float(n[0]), hi_n, 80)
    curve: dict[str, tuple[float, ...]] = {
        "n": tuple(grid.tolist()),
        "fit": tuple(fit(grid).tolist()),
    }
    if method:
        mat = np.stack([b(grid) for b in boots])
        lo, hi = np.quantile(mat, [(1 - level) / 2, (1 + level) / 2], axis=0)
        curve["low"], curve["high"] = tuple(lo.tolist()), tuple(hi.tolist())

    return Forecast(
        ok=True,
        verdict=verdict,
        reason=reason,
        **base,
        fit=fit,
        band_method=method,
        n_boot=n_boot if method else 0,
        n_boot_ok=len(boots) if method else 0,
        current=current,
        asymptote=fit.a,
        asymptote_band=band_of(lambda b: b.a),
        expected=expected,
        expected_band=band_of(lambda b: float(b(target_n))),
        gain_per_100=per100,
        gain_per_100_band=band_of(lambda b: float(b.slope(now) * 100.0)),
        plateau_gain=gain,
        plateau_gain_band=plateau_band,
        labels_for_target=labels_t,
        labels_for_target_band=labels_t_band,
        notes=tuple(notes),
        curve=curve,
        boots=tuple(boots) if method else (),
    )


def _acc(x: float | None) -> str:
    return "-" if x is None else f"{x:.4f}"


def _band(b: tuple[float, float] | None, fmt: str = "{:.4f}") -> str:
    if b is None:
        return ""

    def one(v: float) -> str:
        return "unreachable" if not math.isfinite(v) else fmt.format(v)

    return f" [{one(b[0])}, {one(b[1])}]"


def format_forecast(fc: Forecast) -> list[str]:
    """The forecast as lines for people (accuracy as fractions, gains in points)."""
    if not fc.ok or fc.fit is None or fc.expected is None:
        return [f"verdict: {fc.verdict}", f"why: {fc.reason}"]
    pct = f"{fc.level:.0%}"
    lines = [
        f"fit: acc(n) = {fc.fit.a:.4f} - {fc.fit.b_raw:.4g} * n^-{fc.fit.c:.3f}"
        + (
            f"  ({pct} band: bootstrap over {fc.band_method}, {fc.n_boot_ok} refits)"
            if fc.band_method
            else "  (no band)"
        ),
        f"now: {fc.n_current} labels -> {_acc(fc.current)} (fitted)",
        f"+{fc.plus} labels ({fc.n_current + fc.plus}) -> {_acc(fc.expected)}{_band(fc.expected_band)}",
        f"asymptote (unlimited labels of this kind): {_acc(fc.asymptote)}{_band(fc.asymptote_band)}",
        f"marginal gain at {fc.n_current} labels: {(fc.gain_per_100 or 0) * 100:.2f} points per 100 labels"
        + _band(
            None
            if fc.gain_per_100_band is None
            else (fc.gain_per_100_band[0] * 100, fc.gain_per_100_band[1] * 100),
            "{:.2f}",
        ),
    ]
    if fc.target is not None and fc.labels_for_target is not None:
        if math.isfinite(fc.labels_for_target):
            extra = max(0, math.ceil(fc.labels_for_target - fc.n_current))
            lines.append(
                f"target {fc.target:.4f}: ~{math.ceil(fc.labels_for_target)} labels in all "
                f"({extra} more){_band(fc.labels_for_target_band, '{:.0f}')}"
            )
        else:
            lines.append(
                f"target {fc.target:.4f}: not reached (fitted asymptote {fc.fit.a:.4f})"
                f"{_band(fc.labels_for_target_band, '{:.0f}')}"
            )
    lines.append(f"verdict: {fc.verdict} — {fc.reason}")
    lines.extend(f"note: {n}" for n in fc.notes)
    return lines
