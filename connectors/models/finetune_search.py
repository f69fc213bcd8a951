"""Hyper-parameter search for ``finetune`` that fits small data and a time budget.

Random search (Bergstra & Bengio 2012) over a small grid of the settings that matter for BERT
fine-tuning on little data (learning rate, epochs, batch size, weight decay, warm-up; Mosbach et
al. 2021 on few-sample instability). k-fold is too slow for fine-tuning on a CPU, so each
candidate is scored by *repeated stratified hold-out*: ``repeats`` seeded splits with
``holdout`` of the labels held out; every candidate sees the same splits, and the score is the
mean held-out accuracy, ties broken by the lower mean held-out log loss (a few held-out labels
often give several candidates the same accuracy; the log loss still tells them apart).

The first candidate is always the current configuration, so the search never returns a
configuration it has not compared with the one in use; full ties keep the earlier candidate. The time
budget is checked before each candidate with an estimate of its cost from the candidates already
run (seconds per text-epoch): a run overshoots the budget by at most one candidate, and the
first candidate always runs. Seeded: the same labels, seed and budget give the same candidates
in the same order (the budget decides how many run).
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from loop.errors import ModelError
from loop.progress import SILENT, Progress

SPACE: Mapping[str, tuple[Any, ...]] = {
    "learning_rate": (2e-5, 5e-5, 1e-4),
    "epochs": (3, 5, 8),
    "batch_size": (8, 16, 32),
    "weight_decay": (0.0, 0.01, 0.1),
    "warmup_ratio": (0.0, 0.1),
}
MIN_LABELS = 40


def candidates(
    default: Mapping[str, Any], seed: int, space: Mapping[str, Sequence[Any]] = SPACE
) -> list[dict[str, Any]]:
    """The default first, then every other grid point in a seeded random order."""
    keys = sorted(space)
    first = {k: default[k] for k in keys}
    grid = [
        dict(zip(keys, values, strict=True))
        for values in itertools.product(*(space[k] for k in keys))
    ]
    rest = [c for c in grid if c != first]
    order = np.random.default_rng([seed, 7]).permutation(len(rest))
    return [first] + [rest[i] for i in order]


def _splits(
    y: np.ndarray, repeats: int, holdout: float, seed: int
) -> list[tuple[np.ndarray, np.ndarray]]:
    from sklearn.model_selection import StratifiedShuffleSplit

    sss = StratifiedShuffleSplit(n_splits=repeats, test_size=holdout, random_state=seed % 2**32)
    return [(np.sort(a), np.sort(b)) for a, b in sss.split(np.zeros(len(y)), y)]


def search(
    trainer: Any,
    texts: Sequence[str],
    labels: Sequence[str],
    *,
    classes: Sequence[str],
    seed: int,
    budget_s: float,
    repeats: int = 2,
    holdout: float = 0.2,
    space: Mapping[str, Sequence[Any]] = SPACE,
    max_candidates: int | None = None,
    progress: Progress = SILENT,
) -> dict[str, Any]:
    """Search ``trainer``'s settings (a trainer with ``params()``, ``with_params()`` and
    ``train()``, e.g. FinetuneTrainer). Returns ``{"params", "default", "trials", "seconds",
    "budget_s", "repeats", "holdout", "n_labels", "reason"}``; ``params`` is the best candidate
    (the default when the search cannot run, ``reason`` then says why)."""
    if budget_s <= 0 or repeats < 1 or not 0 < holdout < 1:
        raise ModelError(
            f"expected budget_s > 0, repeats >= 1, 0 < holdout < 1; found {budget_s}, {repeats}, "
            f"{holdout}.",
            "fix the tuning settings.",
        )
    texts, labels = list(texts), list(labels)
    current = trainer.params()
    default = {k: current[k] for k in sorted(space)}
    result: dict[str, Any] = {
        "params": dict(default),
        "default": dict(default),
        "trials": [],
        "budget_s": budget_s,
        "repeats": repeats,
        "holdout": holdout,
        "n_labels": len(labels),
        "reason": None,
    }
    present = sorted(set(labels))
    index = {c: i for i, c in enumerate(present)}
    y = np.array([index[v] for v in labels], dtype=np.int64)
    counts = np.bincount(y, minlength=len(present))
    n_hold = max(int(round(holdout * len(y))), len(present))
    if len(labels) < MIN_LABELS:
        result["reason"] = f"{len(labels)} labels < {MIN_LABELS} needed to tune fine-tuning"
    elif len(present) < 2 or counts.min() < 2:
        result["reason"] = "every class needs >= 2 labels for a stratified hold-out"
    elif len(y) - n_hold < len(present):
        result["reason"] = "the hold-out would leave a class without training data"
    if result["reason"] is not None:
        result["seconds"] = 0.0
        return result

    splits = _splits(y, repeats, holdout, seed)
    t0 = time.perf_counter()
    per_text_epoch: list[float] = []
    cands = candidates(current, seed, space)
    if max_candidates is not None:
        cands = cands[:max_candidates]
    with progress.task("tuning fine-tuning", total=len(cands)) as advance:
        for i, cand in enumerate(cands):
            n_train = len(splits[0][0])
            if i > 0:
                est = float(np.mean(per_text_epoch)) * n_train * cand["epochs"] * repeats
                if time.perf_counter() - t0 + est > budget_s:
                    result["stopped"] = f"budget: next candidate needs ~{est:.0f} s"
                    break
            c0 = time.perf_counter()
            scores, losses = [], []
            for r, (tr, ho) in enumerate(splits):
                clf = trainer.with_params(**cand).train(
                    [texts[j] for j in tr],
                    [labels[j] for j in tr],
                    classes=classes,
                    seed=seed + r,
                )
                proba = clf.predict_proba([texts[j] for j in ho])
                truth = [labels[j] for j in ho]
                pred = np.asarray(clf.classes)[np.argmax(proba, axis=1)]
                scores.append(float(np.mean(pred == np.asarray(truth))))
                col = {c: i for i, c in enumerate(clf.classes)}
                p_true = proba[np.arange(len(ho)), [col[t] for t in truth]]
                losses.append(float(-np.mean(np.log(np.clip(p_true, 1e-12, None)))))
                epochs_run = (
                    max(1, int(clf.info.get("steps_run", 0)))
                    / max(1, int(clf.info.get("steps", 1)))
                    * int(clf.info.get("epochs_planned", cand["epochs"]))
                )
                per_text_epoch.append(
                    float(clf.info.get("train_seconds", 0.0)) / (len(tr) * epochs_run)
                )
            result["trials"].append(
                {
                    "params": cand,
                    "mean": round(float(np.mean(scores)), 5),
                    "scores": [round(s, 5) for s in scores],
                    "log_loss": round(float(np.mean(losses)), 5),
                    "seconds": round(time.perf_counter() - c0, 2),
                }
            )
            advance(1)
    best = max(
        enumerate(result["trials"]),
        key=lambda it: (it[1]["mean"], -it[1]["log_loss"], -it[0]),
    )[1]
    result["params"] = dict(best["params"])
    result["seconds"] = round(time.perf_counter() - t0, 2)
    return result
