"""Markdown tables from `alloop simulate` summaries (what `deploy/simulate.sh` writes): per
dataset and strategy, AUC, final accuracy and macro-F1 as mean ± std over seeds, the median
seconds of one selection (building its inputs included: committee training, embeddings), and
per stopping criterion where it fires. Usage::

    python bench/strategy_table.py runs/sms-spam runs/reuters-r52 runs/bbc-news runs/rotten-tomatoes
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np


def _median_select(per_seed: list[dict]) -> float:
    xs = [x for r in per_seed for x in r.get("select_seconds", [])]
    return float(np.median(xs)) if xs else float("nan")


def tables(run_dirs: list[Path]) -> str:
    lines = [
        "| dataset | strategy | AUC | Δ vs random | final acc. | final macro-F1 | s/selection |",
        "|---|---|---|---|---|---|---|",
    ]
    stop = [
        "| dataset | criterion (margin) | fired in | at labels (per seed) | acc. at stop | acc. at 500 | labels saved |",
        "|---|---|---|---|---|---|---|",
    ]
    for d in run_dirs:
        s = json.loads((d / "summary.json").read_text("utf-8"))
        strats = s["strategies"]
        best = max(v["auc"] for v in strats.values())
        rnd = strats["random"]["auc"]
        head = (
            f"{s['dataset']} (pool {s['pool_size']:,}, test {s['test_size']:,}, "
            f"{len(s['classes'])} classes; all labels {s['full_data_accuracy']['mean']:.3f})"
        )
        for i, (name, v) in enumerate(strats.items()):
            auc = f"{v['auc']:.4f} ± {v['auc_std']:.4f}"
            if v["auc"] == best:
                auc = f"**{auc}**"
            lines.append(
                f"| {head if i == 0 else ''} | {name} | {auc} | {v['auc'] - rnd:+.4f} | "
                f"{v['final_accuracy']:.4f} ± {v['final_accuracy_std']:.4f} | "
                f"{v['final_macro_f1']:.4f} ± {v['final_macro_f1_std']:.4f} | "
                f"{_median_select(v['per_seed']):.3f} |"
            )
        fired = strats.get("margin", {}).get("stopping", {})
        if not fired:
            stop.append(
                f"| {s['dataset']} | none fires by {s['config']['budget']} labels | | | | | |"
            )
        for i, (crit, c) in enumerate(fired.items()):
            at = ", ".join("–" if a is None else str(a) for a in c["fired_at_labels"])
            acc = "–" if c["accuracy_at_stop"] is None else f"{c['accuracy_at_stop']:.4f}"
            stop.append(
                f"| {s['dataset'] if i == 0 else ''} | {crit} | "
                f"{c['fired_in_runs']}/{len(c['fired_at_labels'])} | {at} | {acc} | "
                f"{c['final_accuracy']:.4f} | {c['labels_saved']:.0f} |"
            )
    return "\n".join(lines) + "\n\n" + "\n".join(stop) + "\n"


if __name__ == "__main__":
    print(tables([Path(a) for a in sys.argv[1:]]))
