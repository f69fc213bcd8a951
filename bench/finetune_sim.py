"""Small-data techniques for fine-tuning, measured in simulation.

Runs :func:`loop.simulation.run_simulation` (the real controller, store and trainer, an oracle
annotator, random sampling so every technique sees the same labeled items for a given seed)
with the ``finetune`` trainer in several settings, and reports per dataset and technique: the
area under the accuracy-vs-labels curve (normalised: the mean accuracy over the points), the
final accuracy, both as differences to ``fixed-epochs``, and the mean seconds per retrain (tuning
and adaptation included) as a ratio to that of ``fixed-epochs``, measured in the same run.

Techniques (each a setting of the loop; see README "Small data"):

- ``fixed-epochs`` (the reference): 5 epochs, validation after every epoch, the best epoch's
  weights restored, no minimum of optimizer steps;
- ``no-validation``: 5 epochs on all labels, no validation split, last weights;
- ``early-stop``: up to 10 epochs, patience 2, best weights restored;
- ``min-steps``: at least 100 optimizer steps (more epochs for small training sets; the default
  since these measurements);
- ``warm-start``: each retrain starts from the previous iteration's model;
- ``checkpoint``: start from a checkpoint this script fine-tunes on the *other* dataset
  (sequential fine-tuning; its head is replaced, its encoder kept);
- ``mlm-adapt``: ``--adapt-epochs`` of masked-language-model training on the pool first;
- ``tuned``: hyper-parameter search in nightly mode (a simulation has no night: searched at the
  first retrain, then reused);
- ``tuned-always``: the search at every retrain (as when a nightly retrain runs between batches);
- ``embed-lr``: for comparison, the default model (frozen embeddings + LogisticRegression).

Fine-tuning on a CPU is slow, so the pool and the test set are seeded subsamples (``--pool``,
``--test``) and texts are cut to ``--max-length`` tokens; the numbers are for that setting.
Datasets come from ``$ALLOOP_CACHE_DIR`` (default ``.alloop/cache``). Usage::

    python bench/finetune_sim.py [--datasets rotten-tomatoes bbc-news] [--seeds 3]
        [--techniques fixed-epochs early-stop ...] [--pool 400 --test 300]
        [--initial 40 --step 60 --budget 160] [--json bench/results/finetune-sim.json]
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
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

# Run as a script: import this checkout's package, whatever is installed.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from connectors.data import datasets  # noqa: E402
from connectors.models import make_trainer  # noqa: E402
from connectors.store import SqlStore  # noqa: E402
from loop.simulation import SimulationConfig, run_simulation  # noqa: E402

# every technique is measured against "fixed-epochs": 5 epochs, the best epoch's weights
# restored, no minimum of steps (the finetune defaults before min_steps = 100 became the default)
BASE: Mapping[str, Any] = {"min_steps": 0}
TECHNIQUES: Mapping[str, dict[str, Any]] = {
    "fixed-epochs": {},
    "no-validation": {"validation_fraction": 0.0},
    "early-stop": {"epochs": 10, "patience": 2},
    "min-steps": {"min_steps": 100},
    "warm-start": {"init": "previous"},
    "checkpoint": {},  # + checkpoint=<the other dataset's model>
    "mlm-adapt": {"adapt_epochs": 3},
    "tuned": {},  # + the controller's search, nightly mode
    "tuned-always": {},  # + the controller's search at every retrain
    "embed-lr": {},  # for comparison: the default model (frozen embeddings + LR), not finetune
}


def subsample(ds: Any, pool: int, test: int, seed: int = 0) -> tuple[list[Any], dict[str, str]]:
    """A seeded subsample of the train pool and of the test split (the same for every technique)."""
    rng = np.random.default_rng(seed)
    train = [it for it in ds.items if it.split == "train"]
    held = [it for it in ds.items if it.split == "test"]
    pick = [train[i] for i in sorted(rng.permutation(len(train))[:pool])]
    pick += [held[i] for i in sorted(rng.permutation(len(held))[:test])]
    return pick, {it.id: ds.gold[it.id] for it in pick}


def source_checkpoint(
    ds: Any, out: Path, *, n: int, epochs: int, max_length: int, exclude: set[str]
) -> tuple[Path, dict[str, Any]]:
    """Fine-tune on ``n`` training items of ``ds`` and save the model: the checkpoint another
    dataset starts from."""
    rng = np.random.default_rng(1)
    train = [it for it in ds.items if it.split == "train" and it.id not in exclude]
    pick = [train[i] for i in rng.permutation(len(train))[:n]]
    trainer = make_trainer("finetune", cache_dir=None, epochs=epochs, max_length=max_length)
    t0 = time.perf_counter()
    clf = trainer.train(
        [it.text for it in pick], [ds.gold[it.id] for it in pick], classes=ds.classes, seed=0
    )
    clf.save(out)
    return out, {
        "dataset": ds.name,
        "n": len(pick),
        "epochs": epochs,
        "seconds": round(time.perf_counter() - t0, 1),
    }


def versions_of(db: Path) -> list[Any]:
    store = SqlStore.open(f"sqlite:///{db}")
    try:
        return store.model_versions()
    finally:
        store.close()


def run(args: argparse.Namespace) -> dict[str, Any]:
    cache = Path(os.environ.get("ALLOOP_CACHE_DIR", ".alloop/cache"))
    results: dict[str, Any] = {}
    work_root = Path(tempfile.mkdtemp(prefix="finetune-sim-"))
    loaded = {name: datasets.load(name, cache) for name in args.datasets}
    checkpoints: dict[str, tuple[Path, dict[str, Any]]] = {}
    try:
        for ds_name in args.datasets:
            ds = loaded[ds_name]
            items, gold = subsample(ds, args.pool, args.test)
            results[ds_name] = {}
            for tech in args.techniques:
                params: dict[str, Any] = {
                    "max_length": args.max_length,
                    **BASE,
                    **TECHNIQUES[tech],
                }
                if tech == "mlm-adapt":
                    params["adapt_epochs"] = args.adapt_epochs
                meta: dict[str, Any] = {}
                if tech == "checkpoint":
                    other = next((n for n in datasets.DATASETS if n != ds_name), None)
                    if other is None:
                        raise SystemExit("checkpoint needs a second built-in dataset")
                    if other not in checkpoints:
                        src = loaded.get(other) or datasets.load(other, cache)
                        checkpoints[other] = source_checkpoint(
                            src,
                            work_root / f"checkpoint-{other}",
                            n=args.checkpoint_labels,
                            epochs=2,
                            max_length=args.max_length,
                            exclude=set(),
                        )
                    params["checkpoint"] = checkpoints[other][0]
                    meta["checkpoint"] = checkpoints[other][1]
                if tech == "embed-lr":
                    trainer = make_trainer("embed-lr", cache_dir=cache / "embeddings")
                else:
                    trainer = make_trainer(
                        "finetune", cache_dir=work_root / "cache" / "embeddings", **params
                    )
                config = SimulationConfig(
                    strategies=("random",),
                    initial=args.initial,
                    step=args.step,
                    budget=args.budget,
                    seeds=args.seeds,
                    full_reference=False,
                    tune={"tuned": "nightly", "tuned-always": "always"}.get(tech, "off"),
                    tune_budget_s=args.tune_budget,
                )
                work = work_root / ds_name / tech
                work.mkdir(parents=True)
                t0 = time.perf_counter()
                summary = run_simulation(
                    dataset=ds_name,
                    items=items,
                    gold=gold,
                    classes=ds.classes,
                    trainer=trainer,
                    make_store=lambda tag, w=work: SqlStore.open(f"sqlite:///{w / tag}.db"),
                    work_dir=work,
                    config=config,
                )
                wall = time.perf_counter() - t0
                s = summary["strategies"]["random"]
                mvs = [mv for db in sorted(work.glob("*.db")) for mv in versions_of(db)]
                # the cost of a retrain: fit + search + adaptation
                secs = [
                    sum(
                        float(mv.metrics.get(k, 0.0))
                        for k in ("train_seconds", "tune_seconds", "prepare_seconds")
                    )
                    for mv in mvs
                ]
                training = [mv.config.get("training", {}) for mv in mvs]
                tuned = [
                    mv.config["tuning"]
                    for mv in mvs
                    if (mv.config.get("tuning") or {}).get("source") == "searched"
                ]
                results[ds_name][tech] = {
                    "labels": s["labels"],
                    "accuracy": s["accuracy"],
                    "accuracy_std": s["accuracy_std"],
                    "auc": s["auc"],
                    "auc_per_seed": s["auc_per_seed"],
                    "final_accuracy": s["final_accuracy"],
                    "final_per_seed": [r["accuracy"][-1] for r in s["per_seed"]],
                    "train_seconds_mean": float(np.mean(secs)),
                    "trainings": len(secs),
                    "epochs_run_mean": float("nan")
                    if tech == "embed-lr"
                    else float(
                        np.mean(
                            [
                                t["steps_run"]
                                / max(1, t["steps"])
                                * t.get("epochs_planned", mv.config["epochs"])
                                for t, mv in zip(training, mvs, strict=True)
                            ]
                        )
                    ),
                    "best_epoch_mean": float(
                        np.mean([t.get("best_epoch", np.nan) for t in training])
                    ),
                    "stopped_early": int(sum(bool(t.get("stopped_early")) for t in training)),
                    "tuned_params": [t["params"] for t in tuned],
                    "tuning_seconds": [t["search"]["seconds"] for t in tuned],
                    "tuning_trials": [len(t["search"]["trials"]) for t in tuned],
                    "adaptation": [mv.config.get("adaptation") for mv in mvs[:1]],
                    "wall_seconds": round(wall, 1),
                    **meta,
                }
                print(
                    f"  {ds_name:16s} {tech:14s} auc {s['auc']:.4f} final "
                    f"{s['final_accuracy']:.4f}  {np.mean(secs):.1f} s/train  wall {wall:.0f} s",
                    flush=True,
                )
                if args.json:
                    write(args, results, partial=True)
    finally:
        shutil.rmtree(work_root, ignore_errors=True)
    return results


def table(results: Mapping[str, Any]) -> str:
    head = (
        f"{'dataset':16s} {'technique':14s} {'AUC':>7s} {'dAUC':>7s} {'final':>7s} "
        f"{'dfinal':>7s} {'s/train':>8s} {'x time':>7s} {'epochs':>6s}"
    )
    lines = [head, "-" * len(head)]
    for ds_name, per in results.items():
        base = per.get("fixed-epochs")
        for tech, r in per.items():
            d_auc = r["auc"] - base["auc"] if base else float("nan")
            d_fin = r["final_accuracy"] - base["final_accuracy"] if base else float("nan")
            ratio = r["train_seconds_mean"] / base["train_seconds_mean"] if base else float("nan")
            lines.append(
                f"{ds_name:16s} {tech:14s} {r['auc']:7.4f} {d_auc:+7.4f} "
                f"{r['final_accuracy']:7.4f} {d_fin:+7.4f} {r['train_seconds_mean']:8.1f} "
                f"{ratio:7.2f} {r['epochs_run_mean']:6.1f}"
            )
    return "\n".join(lines)


def write(
    args: argparse.Namespace, results: Mapping[str, Any], *, partial: bool, total: float = 0.0
) -> None:
    payload = {
        "config": {
            "datasets": args.datasets,
            "techniques": args.techniques,
            "seeds": args.seeds,
            "initial": args.initial,
            "step": args.step,
            "budget": args.budget,
            "pool": args.pool,
            "test": args.test,
            "max_length": args.max_length,
            "tune_budget_s": args.tune_budget,
            "checkpoint_labels": args.checkpoint_labels,
            "adapt_epochs": args.adapt_epochs,
            "strategy": "random",
        },
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "partial": partial,
        "total_seconds": round(total, 1),
        "results": results,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(payload, indent=2, default=str) + "\n", encoding="utf-8")


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--datasets", nargs="+", default=["rotten-tomatoes", "bbc-news"])
    p.add_argument("--techniques", nargs="+", default=list(TECHNIQUES), choices=list(TECHNIQUES))
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--initial", type=int, default=40)
    p.add_argument("--step", type=int, default=60)
    p.add_argument("--budget", type=int, default=160)
    p.add_argument("--pool", type=int, default=400, help="train items kept (seeded subsample)")
    p.add_argument("--test", type=int, default=300, help="test items kept (seeded subsample)")
    p.add_argument("--max-length", type=int, default=64)
    p.add_argument("--tune-budget", type=float, default=60.0)
    p.add_argument("--checkpoint-labels", type=int, default=1000)
    p.add_argument("--adapt-epochs", type=int, default=3, help="MLM epochs of mlm-adapt")
    p.add_argument("--json", type=Path, default=Path("bench/results/finetune-sim.json"))
    args = p.parse_args(argv)
    if "fixed-epochs" in args.techniques:  # the reference comes first
        args.techniques = ["fixed-epochs"] + [t for t in args.techniques if t != "fixed-epochs"]
    t0 = time.perf_counter()
    results = run(args)
    total = time.perf_counter() - t0
    print()
    print(table(results))
    print(f"\ntotal {total:.0f} s on {os.cpu_count()} cores")
    write(args, results, partial=False, total=total)
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
