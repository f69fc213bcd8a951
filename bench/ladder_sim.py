"""Small models first: compare tfidf-lr, embed-lr (default C), embed-lr with C tuned by CV and
the ladder (tfidf-lr vs embed-lr, finetune off) in simulation with random sampling.

Runs :func:`loop.simulation.run_simulation` (the real controller and store, an oracle
annotator) for every trainer on the same seeds, so for a given seed every trainer sees the same
labeled items (random sampling does not depend on the model). Reports per dataset and trainer:
the area under the accuracy-vs-labels curve (normalised: the mean accuracy), the final accuracy,
the mean seconds per training (and at the last point), and which rung the ladder chose.
``--trainers ladder-paired ladder-best`` adds the ladder with the other margins of its rule
(``paired-se``, ``none``; see :mod:`connectors.models.ladder`).

Datasets and embeddings come from ``$ALLOOP_CACHE_DIR`` (default ``.alloop/cache``), embeddings
under ``<cache>/embeddings`` as the loop keeps them. Usage::

    python bench/ladder_sim.py [--datasets rotten-tomatoes bbc-news] [--seeds 3]
        [--initial 50 --step 50 --budget 500] [--json bench/results/ladder-sim.json]
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
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

# Run as a script: import this checkout's package, whatever is installed.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from connectors.data import datasets  # noqa: E402
from connectors.models import make_trainer  # noqa: E402
from connectors.store import SqlStore  # noqa: E402
from loop.progress import SILENT, Progress  # noqa: E402
from loop.settings import EmbedLRSettings  # noqa: E402
from loop.simulation import SimulationConfig, run_simulation  # noqa: E402

TRAINERS = ("tfidf-lr", "embed-lr", "embed-lr+tuned-C", "ladder")
OPTIONAL = ("ladder-paired", "ladder-best")  # the ladder with margin paired-se / none


class TimedTrainer:
    """Wraps a trainer; records the seconds and label count of every ``train`` call and, for the
    ladder, the rung it chose."""

    def __init__(self, inner: Any):
        self.inner = inner
        self.name = inner.name
        self.calls: list[dict[str, Any]] = []

    @property
    def embedder(self) -> Any:
        return getattr(self.inner, "embedder", None)

    def train(
        self,
        texts: Sequence[str],
        labels: Sequence[str],
        *,
        classes: Sequence[str],
        seed: int,
        progress: Progress = SILENT,
    ) -> Any:
        t0 = time.perf_counter()
        clf = self.inner.train(texts, labels, classes=classes, seed=seed, progress=progress)
        info = getattr(clf, "info", {}) or {}
        self.calls.append(
            {
                "n": len(texts),
                "seconds": time.perf_counter() - t0,
                "chosen": info.get("chosen"),
                "params": info.get("chosen_params"),
            }
        )
        return clf

    def load(self, path: Path) -> Any:
        return self.inner.load(path)

    def config(self) -> Mapping[str, Any]:
        return self.inner.config()


def build(name: str, embeddings_dir: Path) -> Any:
    embed = EmbedLRSettings().model_dump()  # the project's default embed-lr settings (C=3)
    if name == "tfidf-lr":
        return make_trainer("tfidf-lr", cache_dir=embeddings_dir)
    if name == "embed-lr":
        return make_trainer("embed-lr", cache_dir=embeddings_dir, **embed)
    if name == "embed-lr+tuned-C":
        return make_trainer(
            "ladder", cache_dir=embeddings_dir, rungs=["embed-lr"], tune=True, embed_lr=embed
        )
    if name == "ladder":
        return make_trainer("ladder", cache_dir=embeddings_dir, embed_lr=embed)
    if name in OPTIONAL:
        margin = "paired-se" if name == "ladder-paired" else "none"
        return make_trainer("ladder", cache_dir=embeddings_dir, embed_lr=embed, margin=margin)
    raise SystemExit(f"unknown trainer {name!r}; choose from {', '.join(TRAINERS + OPTIONAL)}")


def run(args: argparse.Namespace) -> dict[str, Any]:
    cache = Path(os.environ.get("ALLOOP_CACHE_DIR", ".alloop/cache"))
    embeddings_dir = cache / "embeddings"
    config = SimulationConfig(
        strategies=("random",),
        initial=args.initial,
        step=args.step,
        budget=args.budget,
        seeds=args.seeds,
        full_reference=False,
    )
    results: dict[str, Any] = {}
    work_root = Path(tempfile.mkdtemp(prefix="ladder-sim-"))
    try:
        for ds_name in args.datasets:
            ds = datasets.load(ds_name, cache)
            results[ds_name] = {}
            for tname in args.trainers:
                timed = TimedTrainer(build(tname, embeddings_dir))
                work = work_root / ds_name / tname.replace("+", "_")
                work.mkdir(parents=True)
                t0 = time.perf_counter()
                summary = run_simulation(
                    dataset=ds_name,
                    items=ds.items,
                    gold=ds.gold,
                    classes=ds.classes,
                    trainer=timed,
                    make_store=lambda tag, w=work: SqlStore.open(f"sqlite:///{w / tag}.db"),
                    work_dir=work,
                    config=config,
                )
                wall = time.perf_counter() - t0
                s = summary["strategies"]["random"]
                secs = [c["seconds"] for c in timed.calls]
                last = [
                    c["seconds"]
                    for c in timed.calls
                    if c["n"] == max(c2["n"] for c2 in timed.calls)
                ]
                chosen = Counter(c["chosen"] for c in timed.calls if c["chosen"])
                per_point: dict[int, Counter[str]] = {}
                for c in timed.calls:
                    if c["chosen"]:
                        per_point.setdefault(c["n"], Counter())[c["chosen"]] += 1
                results[ds_name][tname] = {
                    "labels": s["labels"],
                    "accuracy": s["accuracy"],
                    "accuracy_std": s["accuracy_std"],
                    "auc": s["auc"],
                    "auc_per_seed": s["auc_per_seed"],
                    "final_accuracy": s["final_accuracy"],
                    "train_seconds_mean": float(np.mean(secs)),
                    "train_seconds_last": float(np.mean(last)),
                    "trainings": len(secs),
                    "wall_seconds": round(wall, 1),
                    "chosen": dict(chosen),
                    "chosen_by_labels": {str(n): dict(c) for n, c in sorted(per_point.items())},
                    "chosen_params": [c["params"] for c in timed.calls],
                    "model_config": summary["model_config"],
                }
                print(
                    f"  {ds_name:16s} {tname:18s} auc {s['auc']:.4f} final "
                    f"{s['final_accuracy']:.4f}  {np.mean(secs):.2f} s/train  wall {wall:.0f} s",
                    flush=True,
                )
    finally:
        shutil.rmtree(work_root, ignore_errors=True)
    return results


def table(results: Mapping[str, Any]) -> str:
    head = (
        f"{'dataset':16s} {'trainer':18s} {'AUC':>7s} {'final':>7s} {'s/train':>8s} "
        f"{'s@last':>7s}  ladder choice"
    )
    lines = [head, "-" * len(head)]
    for ds_name, per in results.items():
        for tname, r in per.items():
            choice = ", ".join(f"{k} {v}" for k, v in sorted(r["chosen"].items()))
            lines.append(
                f"{ds_name:16s} {tname:18s} {r['auc']:7.4f} {r['final_accuracy']:7.4f} "
                f"{r['train_seconds_mean']:8.3f} {r['train_seconds_last']:7.3f}  {choice}"
            )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--datasets", nargs="+", default=["rotten-tomatoes", "bbc-news"])
    p.add_argument("--trainers", nargs="+", default=list(TRAINERS), choices=TRAINERS + OPTIONAL)
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--initial", type=int, default=50)
    p.add_argument("--step", type=int, default=50)
    p.add_argument("--budget", type=int, default=500)
    p.add_argument("--json", type=Path, default=Path("bench/results/ladder-sim.json"))
    args = p.parse_args(argv)
    t0 = time.perf_counter()
    results = run(args)
    total = time.perf_counter() - t0
    print()
    print(table(results))
    print(f"\ntotal {total:.0f} s on {os.cpu_count()} cores")
    payload = {
        "config": {
            "datasets": args.datasets,
            "trainers": args.trainers,
            "seeds": args.seeds,
            "initial": args.initial,
            "step": args.step,
            "budget": args.budget,
            "strategy": "random",
        },
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "total_seconds": round(total, 1),
        "results": results,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
