"""The measured learning curve of a project: accuracy against the number of training labels.

:func:`measure_curve` retrains the project's model on nested stratified subsets of the current
training set (several repeats, each with its own random order) and evaluates every model on
held-out data; :func:`loop.forecast.forecast` then fits and extrapolates the curve.

Held-out data, first that applies:

1. ``eval``: the labeled random evaluation sample, when it has >= :data:`MIN_HELD_OUT` items
   (unbiased, never trained on);
2. ``test``: the labeled test split, when it has >= :data:`MIN_HELD_OUT` items;
3. ``holdout``: each repeat holds out a stratified random :data:`HOLDOUT_FRACTION` of the
   training labels (repeated hold-out); the curve then ends at ``1 - HOLDOUT_FRACTION`` of the
   labels and the forecast starts from all of them.

The subsets are nested random subsets of the labels there are. When those labels were chosen
by active learning, the curve answers "more labels chosen the same way"; the held-out data
decides whose accuracy it is.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from loop.contracts import Store, Trainer
from loop.controller import evaluate
from loop.errors import ConfigError, DataError
from loop.forecast import CurvePoint, Forecast, format_forecast
from loop.progress import SILENT, Progress

MIN_HELD_OUT = 20  # labeled eval/test items needed to evaluate on them
HOLDOUT_FRACTION = 0.2
MIN_HOLDOUT_LABELS = 30  # training labels needed for the repeated hold-out
DEFAULT_FRACTIONS: tuple[float, ...] = (0.1, 0.25, 0.5, 0.75, 1.0)


@dataclass(frozen=True)
class MeasuredCurve:
    """Accuracy at each subset size over ``repeats`` repeats.

    ``points`` (one per size, ``repeats`` accuracies each); ``runs`` one dict per trained model
    (repeat, n_labels, accuracy, macro_f1, seconds); ``n_labels`` the training labels now (the
    forecast's starting point); ``held_out`` ``"eval" | "test" | "holdout"``."""

    points: tuple[CurvePoint, ...]
    runs: tuple[Mapping[str, Any], ...]
    n_labels: int
    held_out: str
    n_held_out: int
    trainer: str
    classes: tuple[str, ...]
    fractions: tuple[float, ...]
    repeats: int
    seed: int
    seconds: float

    def info(self) -> dict[str, Any]:
        return {
            "source": "store",
            "trainer": self.trainer,
            "classes": list(self.classes),
            "n_labels": self.n_labels,
            "held_out": self.held_out,
            "n_held_out": self.n_held_out,
            "fractions": list(self.fractions),
            "repeats": self.repeats,
            "seed": self.seed,
            "seconds": round(self.seconds, 2),
            "runs": [dict(r) for r in self.runs],
        }


def parse_fractions(text: str) -> tuple[float, ...]:
    """``"0.1,0.25,1"`` -> ``(0.1, 0.25, 1.0)``; each in (0, 1], sorted, without repeats."""
    try:
        values = [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise ConfigError(
            f"--fractions must be comma-separated numbers, got {text!r}.",
            "pass e.g. --fractions 0.1,0.25,0.5,0.75,1",
        ) from None
    return check_fractions(values)


def check_fractions(fractions: Sequence[float]) -> tuple[float, ...]:
    bad = [f for f in fractions if not (math.isfinite(f) and 0.0 < f <= 1.0)]
    if bad or not fractions:
        raise ConfigError(
            f"fractions of the training labels must be in (0, 1], got {list(fractions)}.",
            "pass e.g. 0.1,0.25,0.5,0.75,1",
        )
    return tuple(sorted(set(float(f) for f in fractions)))


def stratified_order(labels: Sequence[str] | np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A random order of ``range(len(labels))`` whose every prefix is stratified: one item of
    each class first (in random order), then the rest interleaved (systematic sampling per
    class with a random offset) so that a prefix of length ``m`` holds each class close to its
    share ``m * n_c / n`` (within a few items). ``(n,)`` int."""
    y = np.asarray(labels, dtype=object)
    keys = np.empty(len(y))
    for cls in np.unique(y):
        idx = np.flatnonzero(y == cls)
        idx = idx[rng.permutation(len(idx))]
        offset = rng.random()
        keys[idx] = (np.arange(len(idx)) + offset) / len(idx)
        keys[idx[0]] = rng.random() - 1.0  # one of each class before everything else
    return np.argsort(keys, kind="stable")


def _held_out(store: Store) -> tuple[str, Any]:
    for split in ("eval", "test"):
        held = store.training_set(split)
        if len(held) >= MIN_HELD_OUT:
            return split, held
    return "holdout", None


def measure_curve(
    store: Store,
    trainer: Trainer,
    classes: Sequence[str],
    fractions: Sequence[float] = DEFAULT_FRACTIONS,
    repeats: int = 3,
    seed: int = 0,
    progress: Progress = SILENT,
) -> MeasuredCurve:
    """Train ``trainer`` on nested stratified subsets (``fractions`` of the training labels,
    ``repeats`` random orders) and evaluate each model on held-out data (see the module)."""
    fr = check_fractions(fractions)
    if repeats < 1:
        raise ConfigError(f"--repeats must be >= 1, got {repeats}.", "use e.g. 3.")
    ts = store.training_set()
    texts = np.asarray(ts.texts, dtype=object)
    labels = np.asarray(ts.labels, dtype=object)
    present = sorted(set(ts.labels))
    if len(present) < 2:
        raise ConfigError(
            f"a learning curve needs training labels in >= 2 classes, found {len(ts)} labels "
            f"in {len(present)} class(es).",
            "label more items first.",
        )
    unknown = sorted(set(present) - set(classes))
    if unknown:
        raise DataError(
            f"training labels {unknown} are not among the project's classes {list(classes)}.",
            "fix those labels or add the classes to the settings.",
        )
    held_name, held = _held_out(store)
    n_all = len(ts)
    if held is None:
        if n_all < MIN_HOLDOUT_LABELS:
            raise ConfigError(
                f"no held-out data to measure on: {len(store.training_set('eval'))} labeled eval "
                f"items and {len(store.training_set('test'))} labeled test items (need "
                f">= {MIN_HELD_OUT}), and only {n_all} training labels (a hold-out estimate "
                f"needs >= {MIN_HOLDOUT_LABELS}).",
                "ingest labeled test items (split column `test`), set eval_sample_size and label "
                "the sample, or label more items.",
            )
        n_pool = n_all - int(round(HOLDOUT_FRACTION * n_all))
    else:
        n_pool = n_all
    sizes = sorted({max(len(present), int(round(f * n_pool))) for f in fr})
    t_start = time.perf_counter()
    runs: list[dict[str, Any]] = []
    acc: dict[int, list[float]] = {n: [] for n in sizes}
    with progress.task("learning curve", total=repeats * len(sizes)) as advance:
        for r in range(repeats):
            rng = np.random.default_rng([seed, r])
            order = stratified_order(labels, rng)
            if held is None:
                # the tail of a stratified order is stratified too; the classes' first items stay
                held_idx = order[n_pool:]
                h_texts, h_labels = list(texts[held_idx]), list(labels[held_idx])
            else:
                h_texts, h_labels = list(held.texts), list(held.labels)
            for n in sizes:
                idx = order[:n]
                t0 = time.perf_counter()
                clf = trainer.train(
                    list(texts[idx]),
                    list(labels[idx]),
                    classes=list(classes),
                    seed=seed + r,
                    progress=SILENT,
                )
                m = evaluate(clf, h_texts, h_labels, "held")
                acc[n].append(float(m["held_accuracy"]))
                runs.append(
                    {
                        "repeat": r,
                        "n_labels": n,
                        "accuracy": float(m["held_accuracy"]),
                        "macro_f1": float(m["held_macro_f1"]),
                        "n_held_out": len(h_texts),
                        "seconds": round(time.perf_counter() - t0, 3),
                    }
                )
                advance(1)
    return MeasuredCurve(
        points=tuple(CurvePoint(n, tuple(acc[n])) for n in sizes),
        runs=tuple(runs),
        n_labels=n_all,
        held_out=held_name,
        n_held_out=len(held) if held is not None else n_all - n_pool,
        trainer=trainer.name,
        classes=tuple(classes),
        fractions=fr,
        repeats=repeats,
        seed=seed,
        seconds=time.perf_counter() - t_start,
    )


def held_out_note(n_held_out: int, accuracy: float) -> str:
    """The binomial standard error of one accuracy on ``n_held_out`` items: shared by every
    point measured on the same items, so it moves the whole curve and is not in the band."""
    se = math.sqrt(max(accuracy * (1 - accuracy), 1e-12) / max(n_held_out, 1))
    return (
        f"accuracies are measured on {n_held_out} held-out items: about ±{se * 100:.1f} points of "
        "sampling error shared by the whole curve (not in the band)."
    )


def summary_points(
    summary: Mapping[str, Any], strategy: str
) -> tuple[list[CurvePoint], dict[str, Any]]:
    """The points of one strategy of a simulation summary (``summary.json`` of ``alloop
    simulate``): its seeds are the repeats. Returns the points and a description."""
    strategies = summary.get("strategies")
    if not isinstance(strategies, Mapping) or not strategies:
        raise DataError(
            "the file has no `strategies` section: it is not a simulation summary.",
            "pass the summary.json written by `alloop simulate`.",
        )
    name = strategy.replace("_", "-")
    if name not in strategies:
        raise ConfigError(
            f"strategy {strategy!r} is not in the summary (it has {', '.join(strategies)}).",
            "pick one of those with --strategy.",
        )
    s = strategies[name]
    per_seed = s.get("per_seed") or []
    by_n: dict[int, list[float]] = {}
    if per_seed:
        for run in per_seed:
            for n, a in zip(run["labels"], run["accuracy"], strict=True):
                by_n.setdefault(int(n), []).append(float(a))
    else:
        for n, a in zip(s["labels"], s["accuracy"], strict=True):
            by_n.setdefault(int(n), []).append(float(a))
    points = [CurvePoint(n, tuple(v)) for n, v in sorted(by_n.items())]
    info = {
        "source": "summary",
        "dataset": summary.get("dataset"),
        "trainer": summary.get("model"),
        "strategy": name,
        "classes": summary.get("classes"),
        "n_labels": max(by_n) if by_n else 0,
        "held_out": "test",
        "n_held_out": summary.get("test_size"),
        "repeats": len(per_seed) or 1,
        "full_data_accuracy": (summary.get("full_data_accuracy") or {}).get("mean"),
        "pool_size": summary.get("pool_size"),
    }
    return points, info


def load_summary(path: Path) -> dict[str, Any]:
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(
            f"summary file {path} does not exist.", "pass the summary.json of `alloop simulate`."
        ) from None
    except json.JSONDecodeError as e:
        raise DataError(
            f"summary file {path} is not valid JSON ({e}).", "pass the summary.json unchanged."
        ) from None


def curve_document(fc: Forecast, info: Mapping[str, Any]) -> dict[str, Any]:
    """What ``curve.json`` holds: where the points come from (``info``) and the forecast."""
    return {"measured": dict(info), "forecast": fc.to_dict(), "text": format_forecast(fc)}


def _atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def write_curve(
    fc: Forecast, info: Mapping[str, Any], out_dir: Path, title: str = "learning curve"
) -> dict[str, Path]:
    """Write ``curve.json`` and ``curve.png`` into ``out_dir`` (each atomically)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"json": out_dir / "curve.json", "plot": out_dir / "curve.png"}
    _atomic_write_text(paths["json"], json.dumps(curve_document(fc, info), indent=2))
    plot_curve(fc, paths["plot"], title)
    return paths


def plot_curve(fc: Forecast, path: Path, title: str = "learning curve") -> None:
    """Measured points (mean ± sd of the repeats), the fit, its band and the forecast."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    n = [p.n_labels for p in fc.points]
    ax.errorbar(
        n,
        [p.mean for p in fc.points],
        yerr=[p.std for p in fc.points],
        fmt="o",
        color="black",
        ms=4,
        capsize=3,
        label="measured (mean ± sd of repeats)",
        zorder=3,
    )
    if fc.ok and fc.fit is not None and fc.expected is not None:
        grid = fc.curve["n"]
        ax.plot(grid, fc.curve["fit"], color="C0", label=f"fit, asymptote {fc.fit.a:.3f}")
        if "low" in fc.curve:
            ax.fill_between(
                grid,
                fc.curve["low"],
                fc.curve["high"],
                color="C0",
                alpha=0.2,
                label=f"{fc.level:.0%} band",
            )
        end = fc.n_current + fc.plus
        ax.axvspan(fc.n_current, max(end, fc.n_current + 1), color="C1", alpha=0.08)
        err = None
        if fc.expected_band is not None:
            err = [[fc.expected - fc.expected_band[0]], [fc.expected_band[1] - fc.expected]]
        ax.errorbar(
            [end],
            [fc.expected],
            yerr=err,
            fmt="D",
            color="C1",
            capsize=4,
            label=f"+{fc.plus} labels: {fc.expected:.3f}",
            zorder=4,
        )
        if fc.target is not None:
            ax.axhline(fc.target, color="grey", ls=":", lw=1, label=f"target {fc.target:.3f}")
        from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

        ax.set_xscale("log")
        ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_title(f"{title}: {fc.verdict}", fontsize=10)
    if not fc.ok:
        ax.text(0.01, 0.01, fc.reason[:110], transform=ax.transAxes, fontsize=7, color="grey")
    ax.set_xlabel("training labels")
    ax.set_ylabel("held-out accuracy")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    tmp = path.with_name(f".{path.stem}.tmp.png")
    fig.savefig(tmp)
    plt.close(fig)
    os.replace(tmp, path)
