"""Strategy comparison in simulation: the real controller and store, an oracle annotator.

For every seed, every strategy starts from the same cold-start batch (same seed, same pool),
so curves differ only by what the strategies select. ``random`` always runs as the baseline.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from loop.contracts import Embedder, LabelingTool, Store, Trainer
from loop.controller import Controller, evaluate
from loop.errors import ConfigError, DataError
from loop.metrics import normalised_auc
from loop.oracle import OracleTool
from loop.progress import SILENT, Progress
from loop.records import Item, Label


@dataclass(frozen=True)
class SimulationConfig:
    strategies: tuple[str, ...]
    initial: int
    step: int
    budget: int
    seeds: int
    cold_start: str = "random"
    full_reference: bool = True
    # the controller's hyper-parameter search (see Controller): off | nightly | always
    tune: str = "off"
    tune_budget_s: float = 600.0
    # how the controller reads the pool (settings pool.chunk_size / pool.max_candidates)
    pool_chunk_size: int = 50_000
    max_candidates: int | None = 100_000
    committee_size: int = 5

    def validate(self, pool_size: int) -> None:
        if self.initial < 2:
            raise ConfigError(
                f"--initial must be >= 2 (training needs two classes), got {self.initial}.",
                "raise --initial.",
            )
        if self.step < 1 or self.seeds < 1:
            raise ConfigError(
                f"--step and --seeds must be >= 1, got {self.step} and {self.seeds}.", "raise them."
            )
        if self.budget < self.initial:
            raise ConfigError(
                f"--budget ({self.budget}) is below --initial ({self.initial}).",
                "make --budget >= --initial.",
            )
        if self.budget > pool_size:
            raise ConfigError(
                f"--budget ({self.budget}) exceeds the pool ({pool_size} unlabeled train items).",
                f"use --budget <= {pool_size}.",
            )


def strategy_order(requested: Sequence[str]) -> tuple[str, ...]:
    """``random`` first (the baseline), then the requested ones, without repeats."""
    out = ["random"]
    for s in requested:
        name = s.replace("_", "-")
        if name not in out:
            out.append(name)
    return tuple(out)


def run_simulation(
    *,
    dataset: str,
    items: Sequence[Item],
    gold: Mapping[str, str],
    classes: Sequence[str],
    trainer: Trainer,
    make_store: Callable[[str], Store],
    work_dir: Path,
    config: SimulationConfig,
    embedder: Embedder | None = None,
    progress: Progress = SILENT,
    make_tool: Callable[[str, int, Mapping[str, str]], tuple[LabelingTool, Callable[[], None]]]
    | None = None,
) -> dict[str, Any]:
    """Run every (seed, strategy) and return the summary (see ``write_summary``).

    ``make_tool(tag, seed, train_gold) -> (tool, answer)`` gives the labeling tool of one run and
    a function called after every iteration to let the annotators answer; the default is the
    in-process oracle (answers at once)."""
    if make_tool is None:

        def make_tool(
            tag: str, seed: int, train_gold: Mapping[str, str]
        ) -> tuple[LabelingTool, Callable[[], None]]:
            return OracleTool(train_gold), lambda: None

    train_items = [it for it in items if it.split == "train"]
    test_items = [it for it in items if it.split == "test"]
    if not test_items:
        raise DataError(
            f"dataset {dataset!r} has no test split.", "add a `split` column with `test` rows."
        )
    missing = [it.id for it in items if it.id not in gold]
    if missing:
        raise DataError(
            f"{len(missing)} items have no gold label (first: {missing[:3]}).",
            "simulation needs a label on every row.",
        )
    config.validate(len(train_items))
    test_labels = [
        Label(item_id=it.id, value=gold[it.id], source="import", annotation_id=f"import:{it.id}")
        for it in test_items
    ]
    train_gold = {it.id: gold[it.id] for it in train_items}
    names = strategy_order(config.strategies)
    per: dict[str, list[dict[str, Any]]] = {n: [] for n in names}
    full_ref: list[float] = []
    n_iter = 1 + int(np.ceil((config.budget - config.initial) / config.step)) + 1

    with progress.task("simulation", total=config.seeds * len(names) * n_iter) as advance:
        for seed in range(config.seeds):
            for name in names:
                t0 = time.perf_counter()
                store = make_store(f"{name}-seed{seed}")
                tool, answer = make_tool(f"{name}-seed{seed}", seed, train_gold)
                try:
                    store.add_items(items)
                    store.add_labels(test_labels)
                    ctrl = Controller(
                        store,
                        trainer,
                        tool,
                        classes=classes,
                        models_dir=work_dir / "models" / f"{name}-seed{seed}",
                        strategy=name,
                        batch_size=config.step,
                        initial_batch_size=config.initial,
                        min_new_labels=1,
                        cold_start=config.cold_start,
                        tune=config.tune,
                        tune_budget_s=config.tune_budget_s,
                        embedder=embedder,
                        seed=seed,
                        pool_chunk_size=config.pool_chunk_size,
                        max_candidates=config.max_candidates,
                        committee_size=config.committee_size,
                    )
                    ctrl.run_iteration(k=config.initial)  # cold start: nothing to train on yet
                    answer()
                    asked = config.initial
                    advance(1)
                    # labels = items asked so far (the budget spent); trained_on = labels the model
                    # saw (fewer when annotators skip or tie)
                    curve: dict[str, list[Any]] = {
                        "labels": [],
                        "trained_on": [],
                        "accuracy": [],
                        "macro_f1": [],
                        "stopping": [],  # per point: the criteria that fire there
                        "select_seconds": [],  # per point: the selection after that model
                        "train_seconds": [],  # per point: the retrain that made that model
                    }
                    final_per_class = None
                    while True:
                        k = min(config.step, config.budget - asked)
                        rep = ctrl.run_iteration(k=k)
                        answer()
                        advance(1)
                        if rep.trained:
                            curve["labels"].append(asked)
                            curve["trained_on"].append(rep.n_labels)
                            curve["accuracy"].append(rep.metrics["test_accuracy"])
                            curve["macro_f1"].append(rep.metrics["test_macro_f1"])
                            curve["stopping"].append(_fired(rep.stopping))
                            curve["select_seconds"].append(rep.timings.get("select", 0.0))
                            curve["train_seconds"].append(rep.metrics.get("train_seconds", 0.0))
                            final_per_class = rep.metrics.get("test_per_class")
                        asked += rep.selected
                        if k == 0 or rep.selected == 0:
                            break
                finally:
                    store.close()
                per[name].append(
                    {
                        "seed": seed,
                        **curve,
                        "final_per_class": final_per_class,
                        "seconds": round(time.perf_counter() - t0, 2),
                    }
                )
            if config.full_reference:
                clf = trainer.train(
                    [it.text for it in train_items],
                    [train_gold[it.id] for it in train_items],
                    classes=classes,
                    seed=seed,
                    progress=progress,
                )
                m = evaluate(
                    clf, [it.text for it in test_items], [gold[it.id] for it in test_items], "test"
                )
                full_ref.append(m["test_accuracy"])

    full = {"mean": float(np.mean(full_ref)), "per_seed": full_ref} if full_ref else None
    summary: dict[str, Any] = {
        "dataset": dataset,
        "model": trainer.name,
        "model_config": dict(trainer.config()),
        "classes": list(classes),
        "pool_size": len(train_items),
        "test_size": len(test_items),
        "config": {
            "initial": config.initial,
            "step": config.step,
            "budget": config.budget,
            "seeds": config.seeds,
            "cold_start": config.cold_start,
            "tune": config.tune,
        },
        "full_data_accuracy": full,
        "strategies": {},
    }
    for name in names:
        runs = per[name]
        summary["strategies"][name] = {
            **curve_stats(runs),
            # the median: the first selection of a run also embeds the pool (cache fill)
            "select_seconds": float(
                np.median([x for r in runs for x in r.get("select_seconds", [])] or [0.0])
            ),
            "train_seconds": float(
                np.median([x for r in runs for x in r.get("train_seconds", [])] or [0.0])
            ),
            # the retrain at the largest label count (the slowest, usually)
            "last_train_seconds": float(
                np.mean([r["train_seconds"][-1] for r in runs if r.get("train_seconds")] or [0.0])
            ),
            "full_data_accuracy": full["mean"] if full else None,
            "final_per_class": _mean_per_class(runs),
            "stopping": stopping_summary(runs, config.budget),
            "per_seed": runs,
        }
    return summary


def _mean_per_class(runs: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, float]] | None:
    """Precision, recall and F1 of each class at the last point, averaged over the runs."""
    found = [r["final_per_class"] for r in runs if r.get("final_per_class")]
    if not found:
        return None
    return {
        c: {
            k: float(np.mean([f[c][k] for f in found if c in f]))
            for k in ("precision", "recall", "f1", "support")
        }
        for c in found[0]
    }


def curve_stats(runs: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Mean learning curve and its spread over the runs (seeds) of one strategy: labels, mean
    accuracy (and std per point) and macro-F1, normalised AUC per seed, mean and std, final
    accuracy and macro-F1 with their std."""
    acc = np.array([r["accuracy"] for r in runs], dtype=float)
    f1 = np.array([r["macro_f1"] for r in runs], dtype=float)
    aucs = [normalised_auc(r["labels"], r["accuracy"]) for r in runs]
    return {
        "labels": runs[0]["labels"],
        "accuracy": acc.mean(axis=0).tolist(),
        "accuracy_std": acc.std(axis=0).tolist(),
        "macro_f1": f1.mean(axis=0).tolist(),
        "auc": float(np.mean(aucs)),
        "auc_std": float(np.std(aucs)),
        "auc_per_seed": aucs,
        "final_accuracy": float(acc[:, -1].mean()),
        "final_accuracy_std": float(acc[:, -1].std()),
        "final_macro_f1": float(f1[:, -1].mean()),
        "final_macro_f1_std": float(f1[:, -1].std()),
    }


def _fired(stopping: Mapping[str, Any] | None) -> list[str]:
    """The stopping criteria that fire on the model versions so far (as the iteration
    recorded them)."""
    if not stopping:
        return []
    return [name for name, v in stopping["criteria"].items() if v["fired"]]


def stopping_summary(runs: Sequence[Mapping[str, Any]], budget: int) -> dict[str, Any]:
    """Per criterion: the labels at which it first fires in each run (None: never), the test
    accuracy there against the accuracy at the full budget, and the labels it saves."""
    out: dict[str, Any] = {}
    names = sorted({n for r in runs for point in r.get("stopping", []) for n in point})
    for name in names:
        at: list[int | None] = []
        acc_at: list[float] = []
        final: list[float] = []
        saved: list[int] = []
        for r in runs:
            hit = next((i for i, point in enumerate(r["stopping"]) if name in point), None)
            final.append(r["accuracy"][-1])
            if hit is None:
                at.append(None)
                continue
            at.append(r["labels"][hit])
            acc_at.append(r["accuracy"][hit])
            saved.append(budget - r["labels"][hit])
        out[name] = {
            "fired_at_labels": at,
            "fired_in_runs": sum(a is not None for a in at),
            "accuracy_at_stop": float(np.mean(acc_at)) if acc_at else None,
            "final_accuracy": float(np.mean(final)),
            "labels_saved": float(np.mean(saved)) if saved else 0.0,
        }
    return out
