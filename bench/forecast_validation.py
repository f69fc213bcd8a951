"""How good is the learning-curve forecast? Fit on the early part of a measured curve, predict
the later part, compare with what was measured.

For each dataset (Rotten Tomatoes, BBC News) and the ``embed-lr`` model: for each of 3 seeds a
random order of the train split; train on its nested prefixes (random sampling) at
``--sizes`` labels and evaluate on the whole test split. Then, for every horizon in
``--fit-up-to`` (default 200 and 400 labels): fit :func:`loop.forecast.forecast` on the points
up to it and report, for the later points,

- the mean absolute error of the predicted mean accuracy, and whether the measured mean falls
  inside the band (``--level``, default 90%);
- the same error for two plain baselines: ``flat`` (accuracy stays at the last fitted point)
  and ``log-linear`` (``acc = p + q * ln n`` fitted to the same points);
- labels-for-target: with the target set to the measured mean accuracy at each later size, the
  labels the fit says are needed vs the labels the measured curve needed (first crossing,
  linear between sizes), as a ratio, and whether the band holds the measured answer.

Prints a table and writes ``bench/results/forecast-validation.json``. Datasets and embeddings
come from ``ALLOOP_CACHE_DIR`` (default ``.alloop/cache``). Usage::

    python bench/forecast_validation.py [--datasets rotten-tomatoes,bbc-news] [--seeds 3]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

# Run as a script: import this checkout's package, whatever is installed.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from loop.controller import evaluate  # noqa: E402
from loop.forecast import CurvePoint, forecast  # noqa: E402

SIZES = (50, 100, 150, 200, 300, 400, 500, 600, 800, 1000, 1500)


def measure(name: str, cache: Path, sizes: list[int], seeds: int) -> dict[str, Any]:
    """Accuracy on the test split at every size for every seed (nested random prefixes)."""
    from connectors.data import datasets
    from connectors.models import make_trainer

    ds = datasets.load(name, cache)
    trainer = make_trainer("embed-lr", cache_dir=cache / "embeddings")
    train = ds.split("train")
    test = ds.split("test")
    t_texts = [it.text for it in test]
    t_labels = [ds.gold[it.id] for it in test]
    acc = np.zeros((seeds, len(sizes)))
    t0 = time.perf_counter()
    for seed in range(seeds):
        order = np.random.default_rng(seed).permutation(len(train))
        for j, n in enumerate(sizes):
            chosen = [train[i] for i in order[:n]]
            clf = trainer.train(
                [it.text for it in chosen],
                [ds.gold[it.id] for it in chosen],
                classes=ds.classes,
                seed=seed,
            )
            acc[seed, j] = evaluate(clf, t_texts, t_labels, "test")["test_accuracy"]
        print(f"  {name} seed {seed}: {np.round(acc[seed], 4).tolist()}", flush=True)
    # the same model on every train label: a finite-size reference below the true asymptote
    clf = trainer.train(
        [it.text for it in train], [ds.gold[it.id] for it in train], classes=ds.classes, seed=0
    )
    full = evaluate(clf, t_texts, t_labels, "test")["test_accuracy"]
    return {
        "dataset": name,
        "train_size": len(train),
        "test_size": len(test),
        "classes": list(ds.classes),
        "sizes": sizes,
        "accuracy": acc.tolist(),
        "mean": acc.mean(axis=0).tolist(),
        "full_data_accuracy": full,
        "seconds": round(time.perf_counter() - t0, 1),
    }


def crossing(sizes: list[int], mean: list[float], target: float) -> float:
    """Labels at which the measured mean curve first reaches ``target`` (linear between
    sizes); ``inf`` if never."""
    for j, (n, a) in enumerate(zip(sizes, mean, strict=True)):
        if a >= target:
            if j == 0:
                return float(n)
            n0, a0 = sizes[j - 1], mean[j - 1]
            return float(n0 + (n - n0) * (target - a0) / (a - a0))
    return math.inf


def validate(m: dict[str, Any], fit_up_to: int, level: float, n_boot: int) -> dict[str, Any]:
    sizes, mean = m["sizes"], m["mean"]
    acc = np.asarray(m["accuracy"])
    k = sum(1 for n in sizes if n <= fit_up_to)
    points = [CurvePoint(n, tuple(acc[:, j])) for j, n in enumerate(sizes[:k])]
    fc = forecast(points, level=level, n_boot=n_boot, seed=0)
    later = list(range(k, len(sizes)))
    out: dict[str, Any] = {
        "fit_up_to": fit_up_to,
        "fit_points": sizes[:k],
        "ok": fc.ok,
        "verdict": fc.verdict,
        "reason": fc.reason,
    }
    if not fc.ok or fc.fit is None:
        return out
    n_fit = np.array(sizes[:k], dtype=float)
    q, p = np.polyfit(np.log(n_fit), np.array(mean[:k]), 1)
    rows = []
    for j in later:
        n = sizes[j]
        pred, band = fc.at(n)
        rows.append(
            {
                "n": n,
                "measured": mean[j],
                "predicted": pred,
                "band": list(band) if band else None,
                "inside": bool(band and band[0] <= mean[j] <= band[1]),
                "flat": mean[k - 1],
                "log_linear": float(p + q * math.log(n)),
            }
        )
    targets = []
    for j in later:
        target = mean[j]
        true_n = crossing(sizes, mean, target)
        pred_n, band = fc.labels_for(target)
        targets.append(
            {
                "target": target,
                "measured_labels": true_n if math.isfinite(true_n) else None,
                "predicted_labels": pred_n if math.isfinite(pred_n) else None,
                "ratio": pred_n / true_n if math.isfinite(pred_n) else None,
                "band": None if band is None else [b if math.isfinite(b) else None for b in band],
                "inside": bool(band and band[0] <= true_n <= band[1]),
            }
        )
    ratios = [t["ratio"] for t in targets if t["ratio"] is not None]
    out.update(
        {
            "fit": {"a": fc.fit.a, "b": fc.fit.b_raw, "c": fc.fit.c},
            "asymptote_band": list(fc.asymptote_band) if fc.asymptote_band else None,
            "full_data_accuracy": m["full_data_accuracy"],
            "notes": list(fc.notes),
            "points": rows,
            "mae": float(np.mean([abs(r["predicted"] - r["measured"]) for r in rows])),
            "mae_flat": float(np.mean([abs(r["flat"] - r["measured"]) for r in rows])),
            "mae_log_linear": float(np.mean([abs(r["log_linear"] - r["measured"]) for r in rows])),
            "coverage": float(np.mean([r["inside"] for r in rows])),
            "targets": targets,
            "target_unreachable": sum(t["predicted_labels"] is None for t in targets),
            "target_median_abs_log_ratio": float(np.median(np.abs(np.log(ratios))))
            if ratios
            else None,
            "target_coverage": float(np.mean([t["inside"] for t in targets])),
        }
    )
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--datasets", default="rotten-tomatoes,bbc-news")
    ap.add_argument("--sizes", default=",".join(map(str, SIZES)))
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--fit-up-to", default="200,400")
    ap.add_argument("--level", type=float, default=0.9)
    ap.add_argument("--n-boot", type=int, default=400)
    ap.add_argument(
        "--json",
        type=Path,
        default=Path(__file__).resolve().parent / "results" / "forecast-validation.json",
    )
    args = ap.parse_args()
    cache = Path(os.environ.get("ALLOOP_CACHE_DIR", ".alloop/cache"))
    sizes = [int(x) for x in args.sizes.split(",")]
    horizons = [int(x) for x in args.fit_up_to.split(",")]
    results: dict[str, Any] = {
        "model": "embed-lr",
        "seeds": args.seeds,
        "level": args.level,
        "n_boot": args.n_boot,
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count()},
        "datasets": {},
    }
    t0 = time.perf_counter()
    for name in args.datasets.split(","):
        m = measure(name, cache, sizes, args.seeds)
        m["validation"] = [validate(m, h, args.level, args.n_boot) for h in horizons]
        results["datasets"][name] = m
    results["seconds"] = round(time.perf_counter() - t0, 1)

    print()
    head = (
        f"{'dataset':<16} {'fit on':>7} {'a (asym)':>9} {'all':>6} {'MAE':>7} {'flat':>7} {'loglin':>7} "
        f"{'in band':>8} {'target |log ratio|':>19} {'unreachable':>11} {'target in band':>15}"
    )
    print(head)
    print("-" * len(head))
    for name, m in results["datasets"].items():
        for v in m["validation"]:
            if not v["ok"]:
                print(f"{name:<16} {'<=' + str(v['fit_up_to']):>7}  no forecast: {v['reason']}")
                continue
            lr = v["target_median_abs_log_ratio"]
            print(
                f"{name:<16} {'<=' + str(v['fit_up_to']):>7} {v['fit']['a']:>9.4f} "
                f"{m['full_data_accuracy']:>6.4f} "
                f"{v['mae'] * 100:>6.2f}p {v['mae_flat'] * 100:>6.2f}p "
                f"{v['mae_log_linear'] * 100:>6.2f}p {v['coverage']:>8.0%} "
                f"{('-' if lr is None else f'{lr:.2f} (x{math.exp(lr):.2f})'):>19} "
                f"{v['target_unreachable']:>7}/{len(v['targets']):<3} "
                f"{v['target_coverage']:>15.0%}"
            )
    print(
        "a: fitted asymptote; all: accuracy of the same model trained on the whole train split. "
        "MAE: accuracy points over the later measured sizes (mean curve of the seeds); target: "
        "median |ln(predicted / measured labels)| over the reachable ones."
    )
    for name, m in results["datasets"].items():
        for v in m["validation"]:
            if not v["ok"]:
                continue
            print(f"\n{name}, fit on <= {v['fit_up_to']} labels: {v['verdict']}")
            for r in v["points"]:
                band = r["band"]
                bt = f"[{band[0]:.4f}, {band[1]:.4f}]" if band else "-"
                print(
                    f"  n={r['n']:>5}: measured {r['measured']:.4f}  predicted "
                    f"{r['predicted']:.4f} {bt} {'in' if r['inside'] else 'OUT'}"
                )
            for t in v["targets"]:
                pl = t["predicted_labels"]
                print(
                    f"  target {t['target']:.4f}: measured {t['measured_labels']:.0f} labels, "
                    f"predicted {'unreachable' if pl is None else f'{pl:.0f}'} "
                    f"{'in' if t['inside'] else 'OUT'}"
                )
    args.json.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.json.with_name(f".{args.json.name}.tmp")
    tmp.write_text(json.dumps(results, indent=2, default=float), encoding="utf-8")
    os.replace(tmp, args.json)
    print(f"\nwrote {args.json} ({results['seconds']} s)")


if __name__ == "__main__":
    main()
