"""The people's page: the dashboard ``alloop serve`` shows at ``/`` and the self-contained HTML
report of ``alloop report`` (a project, or a simulation run).

Server-rendered with Jinja2 (templates in ``loop/templates``); the learning curves are inline
SVG drawn here, so nothing is fetched from outside when the page is shown (air-gapped hosts,
a report opened from a mail). The dashboard's only script refreshes its main part from
``/ui/main`` every few seconds and sends the promote / rollback buttons to the write API with
the bearer token typed into the page (kept in the tab's session storage, never in a cookie).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape
from markupsafe import Markup, escape

from loop.contracts import Store
from loop.forecast import VERDICT_NONE, CurvePoint, forecast, version_points
from loop.service.status import iteration_info, learning_curve, model_info, project_status

TEMPLATES = Path(__file__).with_name("templates")
#: colours of the curves (Okabe-Ito: told apart with the common colour-vision deficiencies)
PALETTE = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000", "#F0E442")
REFRESH_SECONDS = 5


def _env() -> Environment:
    env = Environment(
        loader=FileSystemLoader(str(TEMPLATES)),
        autoescape=select_autoescape(("html",)),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["pct"] = _pct
    env.filters["num"] = _num
    return env


def _pct(x: Any, digits: int = 1) -> str:
    """An accuracy as a percentage (``–`` when there is none)."""
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "–"
    return f"{100.0 * float(x):.{digits}f} %"


def _num(x: Any, digits: int = 4) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "–"
    if isinstance(x, int):
        return f"{x:,}"
    return f"{float(x):.{digits}f}"


# -- the learning curve ------------------------------------------------------------------------


def project_forecast(points: Sequence[CurvePoint]) -> dict[str, Any] | None:
    """The learning-curve forecast over the model versions' points (versions at the same label
    count are pooled), or None with fewer than 4 label counts (as the plateau criterion)."""
    if len({p.n_labels for p in points}) < 4:
        return None
    return forecast(points, n_boot=200, seed=0).to_dict()


def _nice_ticks(lo: float, hi: float, count: int = 6) -> list[float]:
    """Round tick values (1, 2 or 5 times a power of ten apart) within ``[lo, hi]``."""
    span = max(hi - lo, 1e-9)
    raw = span / max(1, count - 1)
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 5, 10) if m * mag >= raw)
    first = math.ceil(lo / step) * step
    return [first + i * step for i in range(int((hi - first) / step + 1e-9) + 1)]


def svg_curves(
    series: Sequence[Mapping[str, Any]],
    *,
    band: Mapping[str, Sequence[float]] | None = None,
    marker: Mapping[str, float] | None = None,
    title: str = "learning curve",
    width: int = 640,
    height: int = 300,
) -> Markup:
    """Inline SVG: each of ``series`` (``name``, ``x``, ``y``, optional ``y_low``/``y_high``)
    as a line with dots; ``band``: a fitted curve (``n``, ``fit``, optional ``low``/``high``)
    drawn as a dashed line over a shaded band; ``marker``: the forecast point (``x``, ``y``,
    optional ``low``/``high``). Accessible: a title, a description, and every point also in
    the page's tables."""
    xs = [float(x) for s in series for x in s["x"]]
    ys = [float(y) for s in series for y in s["y"] if y is not None]
    if band:
        xs += [float(x) for x in band["n"]]
        ys += [float(y) for y in band.get("low", band["fit"])]
        ys += [float(y) for y in band.get("high", band["fit"])]
    if marker:
        xs.append(float(marker["x"]))
        ys += [float(marker.get("low", marker["y"])), float(marker.get("high", marker["y"]))]
    desc = f"{title}: no points yet"
    if not xs or not ys:
        return Markup(
            f'<svg class="curve" role="img" viewBox="0 0 {width} 60" width="100%">'
            f"<title>{escape(title)}</title><desc>{escape(desc)}</desc>"
            f'<text x="10" y="35" class="muted">no model versions yet</text></svg>'
        )
    left, right, top, bottom = 56, 16, 14, 40
    x0, x1 = min(xs + [0.0]), max(xs)
    x1 = x1 if x1 > x0 else x0 + 1
    y0, y1 = min(ys), max(ys)
    pad = max(0.01, (y1 - y0) * 0.1)
    y0, y1 = max(0.0, y0 - pad), min(1.0, y1 + pad)
    if y1 <= y0:
        y0, y1 = max(0.0, y0 - 0.05), min(1.0, y1 + 0.05)

    def px(x: float) -> float:
        return left + (x - x0) / (x1 - x0) * (width - left - right)

    def py(y: float) -> float:
        return top + (1.0 - (y - y0) / (y1 - y0)) * (height - top - bottom)

    parts = [
        f'<svg class="curve" role="img" viewBox="0 0 {width} {height}" width="100%" '
        f'aria-labelledby="t-{id(series)}">',
        f'<title id="t-{id(series)}">{escape(title)}</title>',
    ]
    names = ", ".join(str(s["name"]) for s in series)
    parts.append(
        f"<desc>{escape(f'{title}: accuracy against labels for {names}')}; labels "
        f"{x0:.0f} to {x1:.0f}, accuracy {y0:.3f} to {y1:.3f}</desc>"
    )
    for k in range(6):  # y grid and ticks
        y = y0 + (y1 - y0) * k / 5
        parts.append(
            f'<line x1="{left}" x2="{width - right}" y1="{py(y):.1f}" y2="{py(y):.1f}" '
            f'class="grid"/><text x="{left - 6}" y="{py(y) + 4:.1f}" text-anchor="end" '
            f'class="tick">{100 * y:.0f}%</text>'
        )
    for x in _nice_ticks(x0, x1):  # x ticks
        parts.append(
            f'<text x="{px(x):.1f}" y="{height - bottom + 16}" text-anchor="middle" '
            f'class="tick">{x:,.0f}</text>'
        )
    parts.append(
        f'<text x="{(left + width - right) / 2:.0f}" y="{height - 6}" text-anchor="middle" '
        f'class="axis">labels</text>'
    )
    if band:
        n = [float(x) for x in band["n"]]
        if band.get("low") and band.get("high"):
            upper = " ".join(
                f"{px(a):.1f},{py(float(b)):.1f}" for a, b in zip(n, band["high"], strict=True)
            )
            lower = " ".join(
                f"{px(a):.1f},{py(float(b)):.1f}"
                for a, b in reversed(list(zip(n, band["low"], strict=True)))
            )
            parts.append(f'<polygon class="band" points="{upper} {lower}"/>')
        fit = " ".join(
            f"{px(a):.1f},{py(float(b)):.1f}" for a, b in zip(n, band["fit"], strict=True)
        )
        parts.append(f'<polyline class="fit" points="{fit}"/>')
    for k, s in enumerate(series):
        colour = s.get("colour") or PALETTE[k % len(PALETTE)]
        pts = [(float(x), float(y)) for x, y in zip(s["x"], s["y"], strict=True) if y is not None]
        if not pts:
            continue
        lo, hi = s.get("y_low"), s.get("y_high")
        if lo is not None and hi is not None:
            upper = " ".join(
                f"{px(float(x)):.1f},{py(float(b)):.1f}" for x, b in zip(s["x"], hi, strict=True)
            )
            lower = " ".join(
                f"{px(float(x)):.1f},{py(float(b)):.1f}"
                for x, b in reversed(list(zip(s["x"], lo, strict=True)))
            )
            parts.append(f'<polygon points="{upper} {lower}" fill="{colour}" fill-opacity="0.12"/>')
        line = " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y in pts)
        parts.append(
            f'<polyline class="series" data-series="{escape(str(s["name"]))}" '
            f'stroke="{colour}" points="{line}"/>'
        )
        for x, y in pts:
            parts.append(
                f'<circle class="point" cx="{px(x):.1f}" cy="{py(y):.1f}" r="3.2" '
                f'fill="{colour}"><title>{escape(str(s["name"]))}: {x:,.0f} labels, '
                f"{100 * y:.1f}%</title></circle>"
            )
    if marker:
        mx, my = px(float(marker["x"])), py(float(marker["y"]))
        if "low" in marker and "high" in marker:
            parts.append(
                f'<line class="fc" x1="{mx:.1f}" x2="{mx:.1f}" y1="{py(marker["low"]):.1f}" '
                f'y2="{py(marker["high"]):.1f}"/>'
            )
        parts.append(
            f'<rect class="fc" x="{mx - 4:.1f}" y="{my - 4:.1f}" width="8" height="8" '
            f'transform="rotate(45 {mx:.1f} {my:.1f})"><title>forecast: '
            f"{100 * float(marker['y']):.1f}% at {float(marker['x']):,.0f} labels</title></rect>"
        )
    if len(series) > 1 or band:  # legend, bottom right (learning curves rise to the right)
        entries = [
            (str(s["name"]), s.get("colour") or PALETTE[k % len(PALETTE)], "line")
            for k, s in enumerate(series)
        ]
        if band:
            entries.append(("fit and 90 % band", "#555", "dash"))
        y = height - bottom - 8 - 16 * len(entries)
        parts.append(
            f'<rect x="{width - right - 156}" y="{y - 2}" width="154" '
            f'height="{16 * len(entries) + 6}" fill="#fff" fill-opacity="0.85"/>'
        )
        for name, colour, kind in entries:
            dash = ' stroke-dasharray="5 3"' if kind == "dash" else ""
            parts.append(
                f'<line x1="{width - right - 150}" x2="{width - right - 128}" y1="{y + 5}" '
                f'y2="{y + 5}" stroke="{colour}" stroke-width="2.5"{dash}/>'
                f'<text x="{width - right - 122}" y="{y + 9}" class="legend">{escape(name)}</text>'
            )
            y += 16
    parts.append("</svg>")
    return Markup("".join(parts))


# -- the project view ------------------------------------------------------------------------


def project_view(
    store: Store,
    *,
    status: Mapping[str, Any] | None = None,
    labeling_url: str | None = None,
    current: str | None = None,
    recent_iterations: int = 15,
) -> dict[str, Any]:
    """Everything the dashboard and the project report show, from the store (and the running
    service's ``status`` when there is one: the job, the lease, the stopping criteria)."""
    info = dict(status) if status is not None else project_status(store)
    versions = store.model_versions()
    models = [model_info(m) for m in versions]
    if current is None:
        cur = info.get("current_model")
        current = cur["id"] if cur else None
        if current is None:
            promoted = [m for m in versions if m.status == "promoted"]
            current = promoted[-1].id if promoted else None
    points = learning_curve(versions)
    split, curve_points = version_points([(m.n_labels, m.metrics) for m in versions])
    fc = project_forecast(curve_points)
    series = [
        {
            "name": f"{split} accuracy",
            "x": [p["n_labels"] for p in points if p.get(f"{split}_accuracy") is not None],
            "y": [p[f"{split}_accuracy"] for p in points if p.get(f"{split}_accuracy") is not None],
        }
    ]
    band = marker = None
    if fc and fc["ok"] and fc["curve"]:
        band = fc["curve"]
        if fc.get("expected") is not None:
            marker = {"x": fc["n_current"] + fc["plus"], "y": fc["expected"]}
            if fc.get("expected_band"):
                marker["low"], marker["high"] = fc["expected_band"]
    its = [iteration_info(i) for i in store.iterations()[-recent_iterations:]]
    from loop.quality import META_KEY

    check = store.get_meta(META_KEY)
    cur_model = next((m for m in models if m["id"] == current), None)
    classes = info.get("classes") or []
    labels_per_class = info.get("labels_per_class") or {}
    return {
        "status": info,
        "classes": classes,
        "labels_per_class": [(c, labels_per_class.get(c, 0)) for c in classes]
        + [(c, n) for c, n in labels_per_class.items() if c not in classes],
        "labeled": sum(labels_per_class.values()),
        "models": list(reversed(models)),  # newest first
        "current": current,
        "current_model": cur_model,
        "per_class": (cur_model or {}).get("metrics", {}).get(f"{split}_per_class")
        or (cur_model or {}).get("metrics", {}).get("test_per_class"),
        "points": points,
        "split": split,
        "forecast": fc,
        "verdict": fc["verdict"] if fc else VERDICT_NONE,
        "verdict_reason": fc["reason"] if fc else "fewer than 4 model versions on held-out data",
        "curve_svg": svg_curves(series, band=band, marker=marker, title="learning curve"),
        "iterations": list(reversed(its)),
        "check": check,
        "check_stale": (check or {}).get("label_revision") != store.label_revision()
        if check
        else None,
        "labeling_url": labeling_url,
        "generated_at": datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC"),
    }


def render_dashboard(view: Mapping[str, Any], *, fragment: bool = False) -> str:
    """The dashboard page (``fragment``: its main part only, for the live refresh)."""
    env = _env()
    if fragment:
        return env.get_template("main.html").render(v=view, live=True)
    return env.get_template("dashboard.html").render(
        v=view, live=True, refresh_seconds=REFRESH_SECONDS, title="alloop"
    )


def render_project_report(view: Mapping[str, Any]) -> str:
    """The project as one self-contained HTML file (no script, no link outside it)."""
    return _env().get_template("report.html").render(v=view, live=False, title="alloop report")


# -- the simulation report -------------------------------------------------------------------


def simulation_view(summary: Mapping[str, Any]) -> dict[str, Any]:
    """Strategies side by side from an ``alloop simulate`` summary: AUC, Δ vs random, final
    accuracy and macro-F1 with their spread, seconds per selection and retrain, the stopping
    criteria, the mean curves with their ±1 sd band, and the forecast over random's curve."""
    from loop.curve import summary_points

    strategies = summary.get("strategies")
    if not isinstance(strategies, Mapping) or not strategies:
        from loop.errors import DataError

        raise DataError(
            "the file has no `strategies` section: it is not a simulation summary.",
            "pass the summary.json written by `alloop simulate`.",
        )
    base = strategies.get("random", {}).get("auc")
    rows = []
    series = []
    for k, (name, s) in enumerate(strategies.items()):
        acc, sd = s["accuracy"], s.get("accuracy_std") or [0.0] * len(s["accuracy"])
        rows.append(
            {
                "name": name,
                "auc": s["auc"],
                "auc_std": s.get("auc_std"),
                "delta": None if base is None else s["auc"] - base,
                "final": s.get("final_accuracy"),
                "final_std": s.get("final_accuracy_std"),
                "f1": s.get("final_macro_f1"),
                "f1_std": s.get("final_macro_f1_std"),
                "select_seconds": s.get("select_seconds"),
                "train_seconds": s.get("train_seconds"),
                "per_seed": s.get("auc_per_seed") or [],
                "stopping": s.get("stopping") or {},
                "colour": PALETTE[k % len(PALETTE)],
            }
        )
        series.append(
            {
                "name": name,
                "x": s["labels"],
                "y": acc,
                "y_low": [a - d for a, d in zip(acc, sd, strict=True)],
                "y_high": [a + d for a, d in zip(acc, sd, strict=True)],
                "colour": PALETTE[k % len(PALETTE)],
            }
        )
    best = max(rows, key=lambda r: r["auc"])["name"]
    classes = [str(c) for c in summary.get("classes") or []]
    per_class = [
        (c, [(s.get("final_per_class") or {}).get(c, {}).get("f1") for s in strategies.values()])
        for c in classes
    ]
    ref = "random" if "random" in strategies else next(iter(strategies))
    points, _ = summary_points(summary, ref)
    fc = forecast(points, n_boot=200, seed=0).to_dict() if len(points) >= 4 else None
    labels = next(iter(strategies.values()))["labels"]
    return {
        "summary": summary,
        "rows": rows,
        "best": best,
        "labels": labels,
        "curve_svg": svg_curves(
            series, title=f"{summary.get('dataset', 'simulation')}: mean test accuracy (± 1 sd)"
        ),
        "forecast": fc,
        "forecast_of": ref,
        "per_class": per_class if any(v is not None for _, f1 in per_class for v in f1) else [],
        "generated_at": datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC"),
    }


def render_simulation_report(view: Mapping[str, Any]) -> str:
    return (
        _env()
        .get_template("simulation.html")
        .render(v=view, live=False, title="alloop simulation report")
    )
