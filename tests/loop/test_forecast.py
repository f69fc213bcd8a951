"""The learning-curve fit and forecast on synthetic curves whose truth is known."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from loop import forecast as fmod
from loop.errors import ConfigError, DataError
from loop.forecast import (
    PLATEAU_GAIN,
    VERDICT_NONE,
    VERDICT_PAYS,
    VERDICT_PLATEAU,
    CurvePoint,
    fit_power_law,
    forecast,
    format_forecast,
    merge_points,
    points_from_runs,
)

SIZES = (50, 100, 200, 400, 800)


def truth(a: float, b: float, c: float):  # type: ignore[no-untyped-def]
    return lambda n: a - b * np.asarray(n, dtype=float) ** (-c)


def noisy_points(f, sizes, repeats: int, noise: float, seed: int) -> list[CurvePoint]:  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(seed)
    return [
        CurvePoint(n, tuple(np.clip(f(n) + rng.normal(0, noise, repeats), 0, 1).tolist()))
        for n in sizes
    ]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.filter_too_much])
@given(
    a=st.floats(0.6, 0.99),
    b=st.floats(0.3, 5.0),
    c=st.floats(0.2, 1.2),
    n0=st.integers(10, 100),
)
def test_recovers_the_parameters_of_an_exact_power_law(
    a: float, b: float, c: float, n0: int
) -> None:
    sizes = [n0 * 2**i for i in range(5)]
    f = truth(a, b, c)
    ys = f(sizes)
    assume(ys[0] > 0.05)  # a curve of accuracies
    assume(a - ys[-1] > 0.002)  # the curve still bends over the measured range
    fit = fit_power_law(sizes, ys)
    assert fit.a == pytest.approx(a, abs=2e-3)
    assert fit.c == pytest.approx(c, rel=2e-2)
    assert fit.b_raw == pytest.approx(b, rel=5e-2)
    assert np.allclose(fit(sizes), ys, atol=1e-5)


def test_forecast_of_an_exact_curve_matches_the_truth() -> None:
    f = truth(0.9, 2.0, 0.5)
    pts = [CurvePoint(n, (float(f(n)),)) for n in SIZES]
    fc = forecast(pts, plus=800, target=0.85, n_boot=0)
    assert fc.ok and fc.verdict == VERDICT_PAYS
    assert fc.n_current == 800 and fc.plus == 800
    assert fc.expected == pytest.approx(float(f(1600)), abs=1e-4)
    assert fc.asymptote == pytest.approx(0.9, abs=1e-3)
    # 0.9 - 2 / sqrt(n) = 0.85  <=>  n = (2 / 0.05)^2 = 1600
    assert fc.labels_for_target == pytest.approx(1600, rel=1e-2)
    # the slope of a - b n^-c is b c n^(-c-1); per 100 labels
    assert fc.gain_per_100 == pytest.approx(100 * 2.0 * 0.5 * 800**-1.5, rel=1e-2)
    assert fc.expected_band is None and fc.band_method is None


def test_band_contains_the_truth_on_noisy_curves_most_of_the_time() -> None:
    f = truth(0.85, 2.0, 0.5)
    inside, widths = [], []
    for trial in range(16):
        pts = noisy_points(f, SIZES, repeats=3, noise=0.01, seed=trial)
        fc = forecast(pts, plus=800, level=0.9, n_boot=100, seed=trial)
        assert fc.ok and fc.expected_band is not None and fc.band_method == "repeats"
        lo, hi = fc.expected_band
        inside.append(lo <= float(f(1600)) <= hi)
        widths.append(hi - lo)
    # nominal 90%; a band that is always [0, 1] would pass the first check, not the second
    print(f"coverage {np.mean(inside):.2f}, mean width {np.mean(widths):.4f}")
    assert np.mean(inside) >= 0.7, np.mean(inside)
    assert np.mean(widths) < 0.06, np.mean(widths)


def test_forecast_is_monotone_and_the_band_orders() -> None:
    pts = noisy_points(truth(0.85, 2.0, 0.5), SIZES, repeats=3, noise=0.01, seed=3)
    fcs = [forecast(pts, plus=p, target=0.8, n_boot=60) for p in (0, 200, 800, 3200)]
    expected = [fc.expected for fc in fcs]
    assert all(x is not None for x in expected)
    assert expected == sorted(expected) and expected[0] < expected[-1]
    for fc in fcs:
        assert fc.expected_band is not None and fc.asymptote is not None
        lo, hi = fc.expected_band
        assert lo <= fc.expected <= hi <= 1.0
        assert fc.expected <= fc.asymptote
    fit = fcs[0].fit
    assert fit is not None
    grid = np.geomspace(10, 1e6, 200)
    assert np.all(np.diff(fit(grid)) > 0)
    needed = [fit.labels_for(t) for t in (0.7, 0.75, 0.8, 0.84)]
    assert needed == sorted(needed)
    low, high = np.array(fcs[0].curve["low"]), np.array(fcs[0].curve["high"])
    assert np.all(low <= high)


def test_band_is_seeded() -> None:
    pts = noisy_points(truth(0.85, 2.0, 0.5), SIZES, repeats=3, noise=0.01, seed=5)
    a = forecast(pts, n_boot=50, seed=1)
    b = forecast(pts, n_boot=50, seed=1)
    c = forecast(pts, n_boot=50, seed=2)
    assert a.expected_band == b.expected_band
    assert a.expected_band != c.expected_band
    assert a.expected == c.expected  # the fit itself does not depend on the seed


def test_target_above_the_asymptote_is_unreachable_not_a_number() -> None:
    pts = noisy_points(truth(0.8, 2.0, 0.5), SIZES, repeats=3, noise=0.005, seed=0)
    fc = forecast(pts, target=0.95, n_boot=50)
    assert fc.ok and fc.labels_for_target == math.inf
    d = fc.to_dict()
    assert d["labels_for_target"] is None and d["labels_for_target_reachable"] is False
    assert any("below the target" in n for n in fc.notes)
    assert any("not reached" in line for line in format_forecast(fc))
    json.dumps(d, allow_nan=False)  # strict JSON


def test_verdict_follows_the_documented_rule() -> None:
    # gain of +50% labels at n=800 for a - b n^-0.5 is b (800^-0.5 - 1200^-0.5) = 0.00653 b
    per_b = 800**-0.5 - 1200**-0.5
    small = 0.5 * PLATEAU_GAIN / per_b  # expected gain: half the threshold
    large = 4.0 * PLATEAU_GAIN / per_b  # four times the threshold
    for b, verdict in ((small, VERDICT_PLATEAU), (large, VERDICT_PAYS)):
        f = truth(0.9, b, 0.5)
        fc = forecast([CurvePoint(n, (float(f(n)),)) for n in SIZES], n_boot=0)
        assert fc.verdict == verdict, (b, fc.reason)
        assert fc.plateau_gain == pytest.approx(b * per_b, rel=2e-2)
        assert "0.5-point rule" in fc.reason


def test_default_plus_is_half_the_current_size_and_n_current_can_be_larger() -> None:
    pts = noisy_points(truth(0.85, 2.0, 0.5), SIZES, repeats=2, noise=0.01, seed=1)
    fc = forecast(pts, n_current=1000, n_boot=0)
    assert fc.n_current == 1000 and fc.plus == 500
    assert fc.current == pytest.approx(float(fc.fit(1000)))  # type: ignore[misc]


@pytest.mark.parametrize(
    ("points", "words"),
    [
        ([], "got 0"),
        ([CurvePoint(100, (0.7, 0.71)), CurvePoint(200, (0.75,))], ">= 3 different label counts"),
        ([CurvePoint(n, (0.8, 0.8)) for n in SIZES], "flat curve"),
        ([CurvePoint(n, (0.9 - 0.02 * i,)) for i, n in enumerate(SIZES)], "does not rise"),
    ],
)
def test_degenerate_input_gives_no_forecast_with_a_reason(
    points: list[CurvePoint], words: str
) -> None:
    fc = forecast(points, target=0.9)
    assert not fc.ok and fc.verdict == VERDICT_NONE
    assert words in fc.reason
    assert fc.expected is None and fc.labels_for_target is None and fc.fit is None
    assert format_forecast(fc)[0] == f"verdict: {VERDICT_NONE}"
    json.dumps(fc.to_dict(), allow_nan=False)


def test_a_failing_fit_gives_no_forecast(monkeypatch: pytest.MonkeyPatch) -> None:
    import scipy.optimize

    def broken(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise RuntimeError("Optimal parameters not found: maximum number of evaluations")

    monkeypatch.setattr(scipy.optimize, "curve_fit", broken)
    pts = noisy_points(truth(0.85, 2.0, 0.5), SIZES, repeats=3, noise=0.01, seed=0)
    fc = forecast(pts)
    assert not fc.ok and "did not converge" in fc.reason and "Optimal parameters" in fc.reason


def test_one_repeat_per_point_uses_the_residuals_or_says_there_is_no_band() -> None:
    f = truth(0.85, 2.0, 0.5)
    noisy = noisy_points(f, SIZES, repeats=1, noise=0.01, seed=2)
    fc = forecast(noisy, n_boot=50)
    assert fc.band_method == "residuals" and fc.expected_band is not None
    exact = [CurvePoint(n, (float(f(n)),)) for n in SIZES]
    fc = forecast(exact, n_boot=50)
    assert fc.ok and fc.expected_band is None and any("no band" in n for n in fc.notes)


@pytest.mark.parametrize(
    ("kwargs", "error", "words"),
    [
        ({"target": 85.0}, ConfigError, "fraction in (0, 1]"),
        ({"level": 90}, ConfigError, "level must be in (0, 1)"),
        ({"plus": -5}, ConfigError, "plus must be >= 0"),
        ({"n_current": 100}, ConfigError, "below the largest measured size"),
        ({"n_boot": -1}, ConfigError, "n_boot"),
    ],
)
def test_bad_options_are_clear_errors(kwargs: dict, error: type, words: str) -> None:
    pts = noisy_points(truth(0.85, 2.0, 0.5), SIZES, repeats=2, noise=0.01, seed=0)
    with pytest.raises(error) as e:
        forecast(pts, **kwargs)
    assert words in str(e.value) and "Fix:" in str(e.value)


@pytest.mark.parametrize(
    ("point", "words"),
    [
        (CurvePoint(100, (83.0,)), "fractions in [0, 1]"),
        (CurvePoint(100, (float("nan"),)), "fractions in [0, 1]"),
        (CurvePoint(0, (0.8,)), "n_labels >= 1"),
        (CurvePoint(100, ()), "has no accuracy"),
    ],
)
def test_bad_points_are_clear_errors(point: CurvePoint, words: str) -> None:
    with pytest.raises(DataError) as e:
        forecast([point, CurvePoint(200, (0.8,)), CurvePoint(400, (0.82,))])
    assert words in str(e.value)


def test_points_with_the_same_size_are_pooled_and_sorted() -> None:
    merged = merge_points(
        [CurvePoint(200, (0.8,)), CurvePoint(100, (0.7,)), CurvePoint(200, (0.82, 0.81))]
    )
    assert [p.n_labels for p in merged] == [100, 200]
    assert merged[1].accuracies == (0.8, 0.82, 0.81)
    assert merged[1].mean == pytest.approx(0.81)
    assert merged[1].std == pytest.approx(0.01)
    assert merged[1].sem == pytest.approx(0.01 / math.sqrt(3))
    assert merged[0].std == 0.0 and merged[0].sem == 0.0


def test_points_from_runs() -> None:
    pts = points_from_runs([10, 20], [[0.5, 0.6], [0.7, 0.8]])
    assert pts == [CurvePoint(10, (0.5, 0.7)), CurvePoint(20, (0.6, 0.8))]
    with pytest.raises(DataError, match="one accuracy per label count"):
        points_from_runs([10, 20], [[0.5]])


def test_at_and_labels_for_agree_with_the_report() -> None:
    pts = noisy_points(truth(0.85, 2.0, 0.5), SIZES, repeats=3, noise=0.01, seed=4)
    fc = forecast(pts, plus=400, target=0.8, n_boot=60)
    value, band = fc.at(1200)
    assert value == pytest.approx(fc.expected) and band == fc.expected_band
    n, nband = fc.labels_for(0.8)
    assert n == pytest.approx(fc.labels_for_target) and nband == fc.labels_for_target_band


def test_report_lines_and_json() -> None:
    pts = noisy_points(truth(0.85, 2.0, 0.5), SIZES, repeats=3, noise=0.01, seed=6)
    fc = forecast(pts, plus=800, target=0.8, n_boot=60)
    text = "\n".join(format_forecast(fc))
    assert "+800 labels (1600) -> " in text and "target 0.8000" in text and "verdict: " in text
    d = json.loads(json.dumps(fc.to_dict(), allow_nan=False))
    assert d["fit"]["a"] == pytest.approx(fc.asymptote)
    assert len(d["curve"]["n"]) == len(d["curve"]["low"]) == len(d["curve"]["fit"])
    assert d["points"][0]["n_labels"] == 50 and len(d["points"][0]["accuracies"]) == 3
    assert fmod.PLATEAU_GROWTH == 0.5 and "50%" in d["rule"]
