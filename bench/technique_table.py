"""The README table of data techniques: one `alloop simulate` output folder per (dataset,
technique), each against the folder of the default (no technique) on the same seeds.

Usage::

    python bench/technique_table.py RUNS_DIR

where RUNS_DIR holds ``<dataset>-<technique>/summary.json`` and ``<dataset>-none/summary.json``
(as ``bash deploy/techniques.sh`` writes them). Prints a Markdown table: AUC and final accuracy
(mean ± sd over seeds, Δ vs none), per-seed AUC differences, and the retrain time as a ratio of
the default's (median seconds per retrain).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np


def load(path: Path) -> dict:
    s = json.loads((path / "summary.json").read_text())
    r = s["strategies"]["random"]
    return {
        "auc": np.asarray(r["auc_per_seed"]),
        "final": np.asarray([p["accuracy"][-1] for p in r["per_seed"]]),
        "train_s": float(np.median([t for p in r["per_seed"] for t in p["train_seconds"]])),
        "config": s["model_config"],
    }


def main() -> None:
    root = Path(sys.argv[1])
    print(
        "| dataset | technique | AUC | Δ AUC (per seed) | final acc. | Δ final "
        "| median s/retrain (× none) |"
    )
    print("|---|---|---|---|---|---|---|")
    for base in sorted(root.glob("*-none")):
        dataset = base.name[: -len("-none")]
        ref = load(base)
        rows = [("none", ref)] + [
            (p.name[len(dataset) + 1 :], load(p))
            for p in sorted(root.glob(f"{dataset}-*"))
            if p != base and (p / "summary.json").is_file()
        ]
        for name, r in rows:
            d = r["auc"] - ref["auc"]
            df = r["final"] - ref["final"]
            print(
                f"| {dataset} | {name} | {r['auc'].mean():.4f} ± {r['auc'].std(ddof=1):.4f} | "
                f"{d.mean():+.4f} ({', '.join(f'{x:+.3f}' for x in d)}) | "
                f"{r['final'].mean():.4f} ± {r['final'].std(ddof=1):.4f} | {df.mean():+.4f} | "
                f"{r['train_s']:.2f} ({r['train_s'] / ref['train_s']:.0f}×) |"
            )


if __name__ == "__main__":
    main()
