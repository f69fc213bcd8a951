"""Peer libraries' query strategies in a pool-based loop, for ``bench/bench_peers.py``.

Runs inside the peer virtualenv (``bench/peers/setup.sh``), never the project's: it imports
numpy, scikit-learn, small-text and scikit-activeml only, nothing of alloop.

Input: an ``.npz`` with ``X (n, d)`` float32 (L2-normalised rows), ``y (n,)`` int class
indices, ``train`` / ``test`` index arrays into ``X``, ``seeds (s,)`` and ``initial (s, m)``
(positions in ``train`` of each seed's initial labeled set); and a JSON job::

    {"npz": "...", "out": "...", "strategies": ["small-text:margin", ...],
     "seeds": [0, 1], "initial": 50, "step": 50, "budget": 500, "C": 1.0, "max_iter": 1000,
     "threads": 1}

Each strategy first runs one untimed selection (imports and first calls), then the seeds.

For every strategy and seed: fit ``LogisticRegression(C, max_iter, random_state=seed)`` on
the labeled set (through the library's own scikit-learn wrapper), record test accuracy and
macro-F1, ask the strategy for ``step`` items of the unlabeled pool (timed: from the fitted
model to the indices, the library's probability / embedding computations included), label
them with their true labels, repeat up to ``budget`` labels. Output: a JSON file with, per
strategy, either ``{"runs": [{"seed", "labels", "accuracy", "macro_f1", "select_seconds"}]}``
or ``{"error": "..."}`` when the strategy cannot run here.

Usage: ``python bench/peers/worker.py JOB.json``
"""

from __future__ import annotations

import json
import sys
import time
import traceback
import warnings
from collections.abc import Callable
from importlib import metadata
from typing import Any

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, f1_score

#: Strategy names this worker knows: "<library>:<strategy>".
STRATEGIES = (
    "small-text:margin",
    "small-text:coreset",
    "small-text:lightweight-coreset",
    "small-text:badge",
    "scikit-activeml:margin",
    "scikit-activeml:coreset",
    "scikit-activeml:badge",
)


class Unavailable(RuntimeError):
    """The strategy cannot run in this environment (the message says why)."""


# -- small-text ------------------------------------------------------------------------------


def _small_text_strategy(name: str) -> Any:
    from small_text import query_strategies as qs

    if name == "margin":
        return qs.BreakingTies()
    if name == "coreset":
        # euclidean on L2-normalised rows: the same ordering as the project's coreset
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "default metric changed in v1.2.0" notice
            return qs.GreedyCoreset(distance_metric="euclidean", normalize=True)
    if name == "lightweight-coreset":
        if not hasattr(qs, "LightweightCoreset"):
            raise Unavailable("small_text.query_strategies has no LightweightCoreset")
        return qs.LightweightCoreset(normalize=True)
    if name == "badge":
        try:
            from small_text.integrations.pytorch.query_strategies import BADGE
        except Exception as exc:  # PytorchNotFoundError without torch
            raise Unavailable(
                "small-text's BADGE lives in small_text.integrations.pytorch and cannot be "
                f"imported without torch: {type(exc).__name__}: {exc}"
            ) from exc
        return BADGE  # constructed with num_classes by the runner
    raise Unavailable(f"unknown small-text strategy {name!r}")


def _small_text_runner(name: str, n_classes: int, C: float, max_iter: int) -> Callable[..., Any]:
    from small_text.base import LABEL_UNLABELED
    from small_text.classifiers import SklearnClassifier
    from small_text.classifiers.classification import EmbeddingMixin
    from small_text.data import SklearnDataset

    strategy = _small_text_strategy(name)
    targets = np.arange(n_classes)
    if name == "badge":
        strategy = strategy(n_classes)

    class EmbeddingSklearnClassifier(SklearnClassifier, EmbeddingMixin):
        """small-text's scikit-learn adapter whose embeddings are its input features (the
        frozen sentence embeddings), for the embedding-based strategies."""

        def embed(self, data_set: Any, return_proba: bool = False, **_: Any) -> Any:
            x = np.asarray(data_set.x)
            # no probabilities: the coreset strategies do not use them, and BADGE computes
            # them itself from the classifier when they are None
            return (x, None) if return_proba else x

    def run(pool: np.ndarray, y_pool: np.ndarray, labeled: np.ndarray, k: int, seed: int):
        lab_y = y_pool[labeled]
        clf = EmbeddingSklearnClassifier(
            LogisticRegression(C=C, max_iter=max_iter, random_state=seed), n_classes
        ).fit(SklearnDataset(pool[labeled], lab_y, target_labels=targets))

        def query() -> np.ndarray:
            y_masked = np.full(pool.shape[0], LABEL_UNLABELED, dtype=np.int64)
            y_masked[labeled] = lab_y
            dataset = SklearnDataset(pool, y_masked, target_labels=targets)
            unlabeled = np.setdiff1d(np.arange(pool.shape[0]), labeled)
            return np.asarray(strategy.query(clf, dataset, unlabeled, labeled, lab_y, n=k))

        return clf.model, query

    return run


# -- scikit-activeml -------------------------------------------------------------------------


def _skactiveml_runner(name: str, n_classes: int, C: float, max_iter: int) -> Callable[..., Any]:
    from skactiveml.classifier import SklearnClassifier
    from skactiveml.pool import Badge, CoreSet, UncertaintySampling
    from skactiveml.utils import MISSING_LABEL

    def run(pool: np.ndarray, y_pool: np.ndarray, labeled: np.ndarray, k: int, seed: int):
        y_masked = np.full(pool.shape[0], MISSING_LABEL, dtype=np.float64)
        y_masked[labeled] = y_pool[labeled]
        clf = SklearnClassifier(
            LogisticRegression(C=C, max_iter=max_iter, random_state=seed),
            classes=np.arange(n_classes),
            missing_label=MISSING_LABEL,
            random_state=seed,
        ).fit(pool, y_masked)
        if name == "margin":
            qs: Any = UncertaintySampling(method="margin_sampling", random_state=seed)
        elif name == "coreset":
            qs = CoreSet(random_state=seed)
        elif name == "badge":
            qs = Badge(random_state=seed)
        else:
            raise Unavailable(f"unknown scikit-activeml strategy {name!r}")

        def query() -> np.ndarray:
            if name == "coreset":
                return np.asarray(qs.query(X=pool, y=y_masked, batch_size=k))
            return np.asarray(qs.query(X=pool, y=y_masked, clf=clf, fit_clf=False, batch_size=k))

        return clf, query

    return run


# -- the loop --------------------------------------------------------------------------------


def make_runner(full_name: str, n_classes: int, C: float, max_iter: int) -> Callable[..., Any]:
    library, _, name = full_name.partition(":")
    if library == "small-text":
        return _small_text_runner(name, n_classes, C, max_iter)
    if library == "scikit-activeml":
        return _skactiveml_runner(name, n_classes, C, max_iter)
    raise Unavailable(f"unknown library {library!r}")


def run_one(
    runner: Callable[..., Any],
    data: dict[str, np.ndarray],
    initial: np.ndarray,
    seed: int,
    step: int,
    budget: int,
) -> dict[str, Any]:
    pool, y_pool = data["pool"], data["y_pool"]
    x_test, y_test = data["x_test"], data["y_test"]
    labeled = np.asarray(initial, dtype=np.int64)
    np.random.seed(seed)  # small-text's coresets and BADGE draw from numpy's global generator
    curve: dict[str, Any] = {
        "seed": seed,
        "labels": [],
        "accuracy": [],
        "macro_f1": [],
        "select_seconds": [],
    }
    while True:
        model, query = runner(pool, y_pool, labeled, step, seed)
        pred = np.asarray(model.predict(x_test)).astype(np.int64)
        curve["labels"].append(int(labeled.shape[0]))
        curve["accuracy"].append(float(accuracy_score(y_test, pred)))
        curve["macro_f1"].append(float(f1_score(y_test, pred, average="macro")))
        k = min(step, budget - labeled.shape[0])
        if k <= 0:
            break
        t0 = time.perf_counter()
        picks = query()
        curve["select_seconds"].append(time.perf_counter() - t0)
        picks = np.asarray(picks, dtype=np.int64).reshape(-1)
        if picks.shape[0] != k or np.unique(picks).shape[0] != k or np.isin(picks, labeled).any():
            raise RuntimeError(
                f"the strategy returned {picks.shape[0]} indices ({np.unique(picks).shape[0]} "
                f"distinct, {int(np.isin(picks, labeled).sum())} already labeled); wanted {k} new"
            )
        labeled = np.concatenate([labeled, picks])
    return curve


def versions() -> dict[str, str]:
    out = {"python": sys.version.split()[0]}
    for dist in ("small-text", "scikit-activeml", "scikit-learn", "numpy", "scipy"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = "not installed"
    return out


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python bench/peers/worker.py JOB.json", file=sys.stderr)
        return 2
    job = json.loads(open(argv[0], encoding="utf-8").read())
    from threadpoolctl import threadpool_limits

    npz = np.load(job["npz"])
    x, y = npz["X"], npz["y"].astype(np.int64)
    train, test = npz["train"], npz["test"]
    data = {"pool": x[train], "y_pool": y[train], "x_test": x[test], "y_test": y[test]}
    initial = {int(s): npz["initial"][i] for i, s in enumerate(npz["seeds"])}
    n_classes = int(npz["n_classes"])
    result: dict[str, Any] = {"versions": versions(), "strategies": {}}
    with threadpool_limits(limits=int(job.get("threads", 1))):
        for full_name in job["strategies"]:
            entry: dict[str, Any]
            try:
                runner = make_runner(full_name, n_classes, float(job["C"]), int(job["max_iter"]))
                step, budget = int(job["step"]), int(job["budget"])
                first = int(job["seeds"][0])
                with warnings.catch_warnings():  # untimed warm-up: imports, first calls
                    warnings.simplefilter("ignore", FutureWarning)
                    run_one(
                        runner,
                        data,
                        initial[first],
                        first,
                        step,
                        min(budget, initial[first].shape[0] + step),
                    )
                runs = []
                for seed in job["seeds"]:
                    t0 = time.perf_counter()
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore", FutureWarning)
                        curve = run_one(runner, data, initial[int(seed)], int(seed), step, budget)
                    curve["seconds"] = round(time.perf_counter() - t0, 2)
                    runs.append(curve)
                    print(f"  {full_name} seed {seed}: {curve['seconds']} s", flush=True)
                entry = {"runs": runs}
            except Unavailable as exc:
                entry = {"error": str(exc)}
                print(f"  {full_name}: cannot run: {exc}", flush=True)
            except Exception as exc:
                entry = {
                    "error": f"{type(exc).__name__}: {exc}",
                    "traceback": traceback.format_exc(),
                }
                print(f"  {full_name}: failed: {type(exc).__name__}: {exc}", flush=True)
            result["strategies"][full_name] = entry
            with open(job["out"], "w", encoding="utf-8") as f:  # partial results survive
                json.dump(result, f)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
