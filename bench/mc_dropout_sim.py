"""Selection for the fine-tuned model, measured in simulation: MC-dropout BALD against margin
and random.

Runs :func:`loop.simulation.run_simulation` (the real controller, store and ``finetune``
trainer, an oracle annotator) with strategies ``random``, ``margin`` and ``bald``; for a
fine-tuned model ``bald`` takes its committee from ``committee_size`` dropout passes
(``FinetuneClassifier.predict_proba_samples``), not from a bagging ensemble. Reports per
dataset and strategy the AUC of the accuracy-vs-labels curve (mean ± std over seeds), the final
accuracy ± std, and the median seconds per selection (scoring included), measured in the same
run. Fine-tuning on a CPU is slow, so the pool and the test set are seeded subsamples
(``--pool``, ``--test``) and texts are cut to ``--max-length`` tokens. Usage::

    python bench/mc_dropout_sim.py [--datasets bbc-news rotten-tomatoes] [--seeds 3]
        [--pool 1000 --test 500] [--initial 40 --step 40 --budget 200]
        [--json bench/results/mc-dropout-sim.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

# Run as a script: import this checkout's package, whatever is installed.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.finetune_sim import subsample  # noqa: E402
from connectors.data import datasets  # noqa: E402
from connectors.models import make_trainer  # noqa: E402
from connectors.store import SqlStore  # noqa: E402
from loop.simulation import SimulationConfig, run_simulation  # noqa: E402

STRATEGIES = ("margin", "bald")


def run(args: argparse.Namespace) -> dict[str, Any]:
    cache = Path(os.environ.get("ALLOOP_CACHE_DIR", ".alloop/cache"))
    out: dict[str, Any] = {
        "setting": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "datasets": {},
    }
    work_root = Path(tempfile.mkdtemp(prefix="mc-dropout-sim-"))
    try:
        for name in args.datasets:
            ds = datasets.load(name, cache)
            items, gold = subsample(ds, args.pool, args.test)
            trainer = make_trainer(
                "finetune", cache_dir=work_root / "emb", max_length=args.max_length
            )
            work = work_root / name
            work.mkdir(parents=True)
            t0 = time.perf_counter()
            summary = run_simulation(
                dataset=name,
                items=items,
                gold=gold,
                classes=ds.classes,
                trainer=trainer,
                make_store=lambda tag, w=work: SqlStore.open(f"sqlite:///{w / tag}.db"),
                work_dir=work,
                config=SimulationConfig(
                    strategies=tuple(args.strategies),
                    initial=args.initial,
                    step=args.step,
                    budget=args.budget,
                    seeds=args.seeds,
                    full_reference=False,
                ),
            )
            out["datasets"][name] = {
                s: {
                    k: v[k]
                    for k in (
                        "labels",
                        "accuracy",
                        "accuracy_std",
                        "auc",
                        "auc_std",
                        "auc_per_seed",
                        "final_accuracy",
                        "final_accuracy_std",
                        "final_macro_f1",
                        "select_seconds",
                    )
                    if k in v
                }
                for s, v in summary["strategies"].items()
            }
            out["datasets"][name]["wall_seconds"] = round(time.perf_counter() - t0, 1)
            print(table({name: out["datasets"][name]}), flush=True)
            if args.json:
                args.json.parent.mkdir(parents=True, exist_ok=True)
                args.json.write_text(json.dumps(out, indent=2))
    finally:
        shutil.rmtree(work_root, ignore_errors=True)
    return out


def table(results: dict[str, Any]) -> str:
    lines = [
        "| dataset | strategy | AUC ± std | Δ AUC vs random | final acc ± std | s / selection |",
        "|---|---|---|---|---|---|",
    ]
    for name, per in results.items():
        base = per["random"]["auc"]
        for s, r in per.items():
            if s == "wall_seconds":
                continue
            sel = r.get("select_seconds")
            lines.append(
                f"| {name} | {s} | {r['auc']:.4f} ± {r['auc_std']:.4f} | {r['auc'] - base:+.4f} "
                f"| {r['final_accuracy']:.4f} ± {r['final_accuracy_std']:.4f} "
                f"| {'' if sel is None else f'{sel:.2f}'} |"
            )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--datasets", nargs="+", default=["bbc-news", "rotten-tomatoes"])
    p.add_argument("--strategies", nargs="+", default=list(STRATEGIES))
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--pool", type=int, default=1000, help="train items kept (seeded subsample)")
    p.add_argument("--test", type=int, default=500, help="test items kept (seeded subsample)")
    p.add_argument("--initial", type=int, default=40)
    p.add_argument("--step", type=int, default=40)
    p.add_argument("--budget", type=int, default=200)
    p.add_argument("--max-length", type=int, default=64)
    p.add_argument("--json", type=Path, default=Path("bench/results/mc-dropout-sim.json"))
    run(p.parse_args(argv))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
