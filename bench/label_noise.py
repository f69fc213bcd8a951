"""Does the label-error search of ``alloop check`` find injected label noise, and is re-labeling
its suspects worth more than the same number of new labels?

Per dataset, seed and noise rate: ``--labels`` items drawn at random from the pool get their true
label, then a share ``noise`` of them is flipped to a uniformly drawn other class (what careless
annotators do). The search (:mod:`loop.quality`: 5-fold out-of-fold probabilities of embed-lr,
cleanlab's confident learning) names suspects; we report

- precision and recall of the suspects against the flipped labels;
- test accuracy of embed-lr trained on: the noisy labels; the noisy labels with the suspects
  re-labeled by an oracle (|suspects| labels spent); the noisy labels plus |suspects| *new* random
  items labeled at the same noise rate (the same budget spent on new items); the noisy labels
  with the suspects dropped (no labels spent); the clean labels (the ceiling at this size).

Usage::

    python bench/label_noise.py [--datasets rotten-tomatoes bbc-news] [--seeds 3]
        [--labels 500] [--noise 0.05 0.15] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from connectors.data import datasets  # noqa: E402
from connectors.models import make_trainer  # noqa: E402
from connectors.quality import cleanlab_issues  # noqa: E402
from loop.quality import out_of_fold_proba  # noqa: E402


def accuracy(trainer, texts, labels, classes, test_texts, test_y, seed) -> float:  # noqa: ANN001
    model = trainer.train(texts, labels, classes=classes, seed=seed)
    pred = np.asarray(model.classes)[np.argmax(model.predict_proba(test_texts), axis=1)]
    return float(np.mean(pred == test_y))


def flip(labels: list[str], classes: list[str], rate: float, rng: np.random.Generator):  # noqa: ANN201
    """Labels with round(rate * n) of them flipped to another class; the flipped positions."""
    out = list(labels)
    n = len(labels)
    where = rng.choice(n, size=round(rate * n), replace=False)
    for i in where:
        others = [c for c in classes if c != labels[i]]
        out[i] = others[int(rng.integers(len(others)))]
    return out, set(int(i) for i in where)


def run(name: str, cache: Path, seeds: int, n_labels: int, rates: list[float]) -> list[dict]:
    ds = datasets.load(name, cache)
    classes = list(ds.classes)
    pool = [it for it in ds.items if it.split == "train"]
    test = [it for it in ds.items if it.split == "test"]
    test_texts = [it.text for it in test]
    test_y = np.asarray([ds.gold[it.id] for it in test])
    trainer = make_trainer("embed-lr", cache_dir=cache / "embeddings")
    trainer.embedder.embed([it.text for it in pool] + test_texts)  # fill the cache once
    rows = []
    for seed in range(seeds):
        rng = np.random.default_rng(1000 + seed)
        order = rng.permutation(len(pool))
        pick = [pool[i] for i in order[:n_labels]]
        texts = [it.text for it in pick]
        clean = [ds.gold[it.id] for it in pick]
        for rate in rates:
            noisy, flipped = flip(clean, classes, rate, np.random.default_rng(seed * 7 + 1))
            t0 = time.perf_counter()
            present = sorted(set(noisy))
            proba = out_of_fold_proba(trainer, texts, noisy, present, folds=5, seed=seed)
            index = {c: k for k, c in enumerate(present)}
            suspects = set(
                int(i) for i in cleanlab_issues(np.asarray([index[v] for v in noisy]), proba)
            )
            search_s = time.perf_counter() - t0
            hit = len(suspects & flipped)
            k = len(suspects)
            relabeled = [clean[i] if i in suspects else v for i, v in enumerate(noisy)]
            extra = [pool[i] for i in order[n_labels : n_labels + k]]
            extra_noisy, _ = flip(
                [ds.gold[it.id] for it in extra], classes, rate, np.random.default_rng(seed + 99)
            )
            kept = [i for i in range(len(texts)) if i not in suspects]

            def acc(tx: list[str], lb: list[str], seed: int = seed) -> float:
                return accuracy(trainer, tx, lb, classes, test_texts, test_y, seed)

            row = {
                "dataset": name,
                "seed": seed,
                "labels": n_labels,
                "noise": rate,
                "flipped": len(flipped),
                "suspects": k,
                "precision": hit / k if k else None,
                "recall": hit / len(flipped) if flipped else None,
                "search_s": round(search_s, 2),
                "acc_noisy": acc(texts, noisy),
                "acc_relabel": acc(texts, relabeled),
                "acc_new_items": acc(texts + [it.text for it in extra], noisy + extra_noisy),
                "acc_drop": acc([texts[i] for i in kept], [noisy[i] for i in kept]),
                "acc_clean": acc(texts, clean),
            }
            rows.append(row)
            print(json.dumps(row), flush=True)
    return rows


def table(rows: list[dict]) -> str:
    """Mean ± sd over seeds per (dataset, noise)."""
    keys = sorted({(r["dataset"], r["noise"]) for r in rows})
    lines = [
        "| dataset | noise | flipped | suspects | precision | recall | noisy | re-label suspects "
        "| same budget, new items | drop suspects | clean |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]

    def ms(vals: list[float]) -> str:
        a = np.asarray([v for v in vals if v is not None], dtype=float)
        return f"{a.mean():.4f} ± {a.std(ddof=1) if a.size > 1 else 0:.4f}" if a.size else "–"

    for d, rate in keys:
        rs = [r for r in rows if r["dataset"] == d and r["noise"] == rate]
        lines.append(
            f"| {d} | {rate:.0%} | {np.mean([r['flipped'] for r in rs]):.0f} | "
            f"{np.mean([r['suspects'] for r in rs]):.0f} | {ms([r['precision'] for r in rs])} | "
            f"{ms([r['recall'] for r in rs])} | {ms([r['acc_noisy'] for r in rs])} | "
            f"{ms([r['acc_relabel'] for r in rs])} | {ms([r['acc_new_items'] for r in rs])} | "
            f"{ms([r['acc_drop'] for r in rs])} | {ms([r['acc_clean'] for r in rs])} |"
        )
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--datasets", nargs="+", default=["rotten-tomatoes", "bbc-news"])
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--labels", type=int, default=500)
    ap.add_argument("--noise", type=float, nargs="+", default=[0.05, 0.15])
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    cache = Path(os.environ.get("ALLOOP_CACHE_DIR", ".alloop/cache"))
    rows = []
    for name in args.datasets:
        rows += run(name, cache, args.seeds, args.labels, args.noise)
    print(table(rows))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1), encoding="utf-8")


if __name__ == "__main__":
    main()
