"""Simulation reports: summary.json, curves.csv and curves.png."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path
from typing import Any


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def write_summary(summary: dict[str, Any], out_dir: Path) -> dict[str, Path]:
    """Write ``summary.json``, ``curves.csv`` (one row per strategy, seed and point; seed
    ``mean`` for the mean curve) and ``curves.png``. Returns the paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {
        "summary": out_dir / "summary.json",
        "csv": out_dir / "curves.csv",
        "plot": out_dir / "curves.png",
    }
    _atomic_write(paths["summary"], json.dumps(summary, indent=2))
    rows: list[list[Any]] = []
    for name, s in summary["strategies"].items():
        for i, n in enumerate(s["labels"]):
            rows.append([name, "mean", n, s["accuracy"][i], s["macro_f1"][i]])
        for run in s["per_seed"]:
            for i, n in enumerate(run["labels"]):
                rows.append([name, run["seed"], n, run["accuracy"][i], run["macro_f1"][i]])
    tmp = paths["csv"].with_name(".curves.csv.tmp")
    with tmp.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["strategy", "seed", "labels", "accuracy", "macro_f1"])
        w.writerows(rows)
    os.replace(tmp, paths["csv"])
    plot_curves(summary, paths["plot"])
    return paths


def plot_curves(summary: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    for name, s in summary["strategies"].items():
        lo = [a - d for a, d in zip(s["accuracy"], s["accuracy_std"], strict=True)]
        hi = [a + d for a, d in zip(s["accuracy"], s["accuracy_std"], strict=True)]
        (line,) = ax.plot(
            s["labels"],
            s["accuracy"],
            marker="o",
            ms=3,
            label=f"{name} (AUC {s['auc']:.3f})",
            ls="--" if name == "random" else "-",
        )
        ax.fill_between(s["labels"], lo, hi, color=line.get_color(), alpha=0.15)
    full = summary.get("full_data_accuracy")
    if full:
        ax.axhline(
            full["mean"],
            color="grey",
            lw=1,
            ls=":",
            label=f"all {summary['pool_size']} labels ({full['mean']:.3f})",
        )
    cfg = summary["config"]
    ax.set_title(f"{summary['dataset']} — {summary['model']}, {cfg['seeds']} seed(s)")
    same = {"margin", "entropy", "least-confidence"} & set(summary["strategies"])
    if len(summary["classes"]) == 2 and len(same) > 1:
        ax.text(
            0.01,
            0.01,
            f"2 classes: {', '.join(sorted(same))} rank items identically (curves overlap)",
            transform=ax.transAxes,
            fontsize=7,
            color="grey",
        )
    ax.set_xlabel("labeled items")
    ax.set_ylabel("test accuracy")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    tmp = path.with_name(".curves.png.tmp.png")
    fig.savefig(tmp)
    plt.close(fig)
    os.replace(tmp, path)
