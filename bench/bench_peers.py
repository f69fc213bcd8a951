"""Benchmark our query strategies against peer libraries' on the same data, side by side.

For every dataset: the texts are embedded once with the project's cached MiniLM embedder (the
``embed-lr`` model's, as ``alloop simulate`` builds it), and every contender runs the same
pool-based loop on those embeddings: the same train pool and test split, the same initial
labeled set per seed (``np.random.default_rng(seed).choice(n_train, initial)``), the same
classifier (scikit-learn ``LogisticRegression(C, max_iter, random_state=seed)``) refit at
every step, ``step`` items asked per selection up to ``budget`` labels, the true labels
added. Our strategies (``random``, ``margin``, ``coreset``, ``badge``, from the strategy
registry) run in this process; the peers' (small-text, scikit-activeml) run in their own
virtualenv through ``bench/peers/worker.py``, so they never become project dependencies.

Reported per (library, strategy): the normalised area under the accuracy curve (mean ± std
over seeds, as ``alloop simulate``), final accuracy and macro-F1, mean seconds per selection
(from the fitted model to the chosen indices, probabilities and embeddings of the pool
included) and the ratio of our selection time to each peer's for the same strategy.

Usage::

    bash bench/peers/setup.sh      # once: .alloop/bench-venv with the peer libraries
    python bench/bench_peers.py [--dataset bbc-news --dataset rotten-tomatoes] [--seeds 5]
        [--peer-python .alloop/bench-venv/bin/python] [--out runs/bench_peers]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
# Run as a script: import this checkout's packages, whatever is installed.
sys.path.insert(0, str(ROOT))

import strategies  # noqa: E402
from loop.simulation import curve_stats  # noqa: E402

OURS = "alloop"
OUR_STRATEGIES = ("random", "margin", "coreset", "badge")
#: The peer strategies the worker runs, "<library>:<strategy>" (see bench/peers/worker.py).
PEER_STRATEGIES = (
    "small-text:margin",
    "small-text:coreset",
    "small-text:lightweight-coreset",
    "small-text:badge",
    "scikit-activeml:margin",
    "scikit-activeml:coreset",
    "scikit-activeml:badge",
)
DEFAULT_DATASETS = ("rotten-tomatoes", "bbc-news")
DEFAULT_PEER_PYTHON = Path(".alloop/bench-venv/bin/python")
SETUP_COMMAND = "bash bench/peers/setup.sh"
WORKER = ROOT / "bench" / "peers" / "worker.py"


def say(line: str) -> None:
    print(line, flush=True)


# -- data -------------------------------------------------------------------------------------


def embed_dataset(name: str, settings: Any) -> dict[str, Any]:
    """The dataset's embeddings, labels and splits, embedded by the embed-lr model's cached
    embedder (vectors are cached on disk: only new texts are embedded)."""
    from connectors.data import datasets
    from loop import wiring
    from loop.progress import LogProgress

    progress = LogProgress(say, every=30.0)
    data = datasets.load(name, settings.cache, progress=progress, **settings.text.model_dump())
    trainer = wiring.make_trainer(settings)
    embedder = wiring.embedder_for(settings, trainer, ["coreset"], "random")
    assert embedder is not None  # coreset needs embeddings
    texts = [it.text for it in data.items]
    t0 = time.perf_counter()
    x = np.asarray(embedder.embed(texts, progress=progress), dtype=np.float32)
    embed_s = time.perf_counter() - t0
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    x = x / np.maximum(norms, 1e-12)  # the embedder's rows are unit already; keep them exact
    index = {c: j for j, c in enumerate(data.classes)}
    y = np.array([index[data.gold[it.id]] for it in data.items], dtype=np.int64)
    splits = np.array([it.split for it in data.items])
    return {
        "X": x,
        "y": y,
        "train": np.flatnonzero(splits == "train"),
        "test": np.flatnonzero(splits == "test"),
        "classes": list(data.classes),
        "embed_seconds": embed_s,
        "embedder": dict(getattr(embedder, "config", dict)()),
    }


def initial_sets(n_train: int, initial: int, seeds: Sequence[int]) -> np.ndarray:
    """``(len(seeds), initial)``: each seed's initial labeled positions in the train pool."""
    return np.stack(
        [np.random.default_rng(s).choice(n_train, initial, replace=False) for s in seeds]
    ).astype(np.int64)


# -- our strategies -------------------------------------------------------------------------


def _full_proba(proba: np.ndarray, model_classes: np.ndarray, n_classes: int) -> np.ndarray:
    """The classifier's columns placed into all ``n_classes`` (0 for a class it never saw)."""
    if proba.shape[1] == n_classes:
        return proba
    out = np.zeros((proba.shape[0], n_classes), dtype=np.float64)
    out[:, np.asarray(model_classes, dtype=np.intp)] = proba
    return out


def run_ours(
    name: str,
    data: dict[str, np.ndarray],
    initial: np.ndarray,
    seed: int,
    *,
    n_classes: int,
    step: int,
    budget: int,
    C: float,
    max_iter: int,
) -> dict[str, Any]:
    """One seed of the loop with our strategy ``name`` (contract v2: the inputs it needs)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import accuracy_score, f1_score

    strategy = strategies.get_measure(name)
    needs = strategy.needs
    pool, y_pool = data["pool"], data["y_pool"]
    x_test, y_test = data["x_test"], data["y_test"]
    rng = np.random.default_rng(seed)
    labeled = np.asarray(initial, dtype=np.int64)
    curve: dict[str, Any] = {
        "seed": seed,
        "labels": [],
        "accuracy": [],
        "macro_f1": [],
        "select_seconds": [],
    }
    while True:
        model = LogisticRegression(C=C, max_iter=max_iter, random_state=seed)
        model.fit(pool[labeled], y_pool[labeled])
        pred = model.predict(x_test)
        curve["labels"].append(int(labeled.shape[0]))
        curve["accuracy"].append(float(accuracy_score(y_test, pred)))
        curve["macro_f1"].append(float(f1_score(y_test, pred, average="macro")))
        k = min(step, budget - labeled.shape[0])
        if k <= 0:
            break
        t0 = time.perf_counter()
        unlabeled = np.setdiff1d(np.arange(pool.shape[0]), labeled)
        got: dict[str, np.ndarray] = {}
        if "proba" in needs:
            got["proba"] = _full_proba(
                model.predict_proba(pool[unlabeled]), model.classes_, n_classes
            )
        if "embeddings" in needs:
            got["embeddings"] = pool[unlabeled]
        if "labeled_embeddings" in needs:
            got["labeled_embeddings"] = pool[labeled]
        if "labels" in needs:
            got["labels"] = y_pool[labeled].astype(np.intp)
        idx, _ = strategy.choose(strategies.SelectionInputs(**got), k, rng)
        picks = unlabeled[np.asarray(idx, dtype=np.intp)]
        curve["select_seconds"].append(time.perf_counter() - t0)
        labeled = np.concatenate([labeled, picks])
    return curve


# -- peers ----------------------------------------------------------------------------------


def run_peers(
    peer_python: Path, npz: Path, job: dict[str, Any], work: Path
) -> tuple[dict[str, Any], float]:
    job_path = work / "job.json"
    job_path.write_text(json.dumps(job), encoding="utf-8")
    threads = str(job["threads"])
    env = {
        **os.environ,
        "OMP_NUM_THREADS": threads,
        "OPENBLAS_NUM_THREADS": threads,
        "MKL_NUM_THREADS": threads,
        "PYTHONWARNINGS": "ignore",
    }
    env.pop("PYTHONPATH", None)  # the worker must not see the project
    t0 = time.perf_counter()
    proc = subprocess.run(
        [str(peer_python), str(WORKER), str(job_path)], env=env, cwd=str(work), check=False
    )
    seconds = time.perf_counter() - t0
    out = Path(job["out"])
    if not out.exists():
        raise SystemExit(f"the peer worker wrote no result (exit status {proc.returncode}).")
    result = json.loads(out.read_text(encoding="utf-8"))
    if proc.returncode != 0:
        result["worker_exit_status"] = proc.returncode
    return result, seconds


# -- summary --------------------------------------------------------------------------------


def summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    sel = [s for r in runs for s in r["select_seconds"]]
    return {
        **curve_stats(runs),
        "select_seconds": float(np.mean(sel)) if sel else 0.0,
        "per_seed": runs,
    }


def build_rows(
    ours: dict[str, list[dict[str, Any]]], peers: dict[str, Any]
) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for name, runs in ours.items():
        rows.append({"library": OURS, "strategy": name, **summarise(runs)})
    for full_name, entry in peers.items():
        library, _, name = full_name.partition(":")
        if "error" in entry:
            rows.append({"library": library, "strategy": name, "error": entry["error"]})
            continue
        rows.append({"library": library, "strategy": name, **summarise(entry["runs"])})
    our_time = {r["strategy"]: r["select_seconds"] for r in rows if r["library"] == OURS}
    for r in rows:
        if r["library"] == OURS or "error" in r:
            continue
        mine, theirs = our_time.get(r["strategy"]), r["select_seconds"]
        r["our_time_ratio"] = mine / theirs if mine is not None and theirs > 0 else None
    return rows


def start_consistent(rows: list[dict[str, Any]]) -> bool:
    """Whether every contender's first point (same initial set, same classifier, before any
    selection) has the same test accuracy for each seed: the protocols agree."""
    firsts: dict[int, set[float]] = {}
    for r in rows:
        for run in r.get("per_seed", []):
            firsts.setdefault(run["seed"], set()).add(round(run["accuracy"][0], 12))
    return all(len(v) == 1 for v in firsts.values())


def print_table(dataset: str, rows: list[dict[str, Any]], n_seeds: int) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{dataset}: {n_seeds} seeds", title_justify="left")
    for col in (
        "library",
        "strategy",
        "AUC",
        "final acc",
        "macro-F1",
        "s/selection",
        "ours/theirs",
    ):
        table.add_column(col, justify="left" if col in ("library", "strategy") else "right")
    for r in rows:
        if "error" in r:
            table.add_row(r["library"], r["strategy"], "-", "-", "-", "-", "-")
            continue
        ratio = r.get("our_time_ratio")
        table.add_row(
            r["library"],
            r["strategy"],
            f"{r['auc']:.4f} ± {r['auc_std']:.4f}",
            f"{r['final_accuracy']:.4f}",
            f"{r['final_macro_f1']:.4f}",
            f"{r['select_seconds']:.4f}",
            "" if ratio is None else f"{ratio:.3f}",
        )
    console = Console(width=120)
    console.print(table)
    for r in rows:
        if "error" in r:
            console.print(
                f"  {r['library']} {r['strategy']}: cannot run: {r['error']}",
                markup=False,
                highlight=False,
            )


# -- main -------------------------------------------------------------------------------------


def bench_dataset(name: str, args: argparse.Namespace, settings: Any) -> dict[str, Any]:
    from threadpoolctl import threadpool_limits

    t_start = time.perf_counter()
    say(f"== {name}: loading and embedding")
    emb = embed_dataset(name, settings)
    x, y = emb["X"], emb["y"]
    train, test = emb["train"], emb["test"]
    n_classes = len(emb["classes"])
    seeds = list(range(args.seeds))
    init = initial_sets(train.shape[0], args.initial, seeds)
    say(
        f"{name}: {x.shape[0]} texts ({train.shape[0]} train, {test.shape[0]} test), "
        f"{n_classes} classes, embeddings {x.shape} in {emb['embed_seconds']:.1f} s"
    )
    data = {"pool": x[train], "y_pool": y[train], "x_test": x[test], "y_test": y[test]}
    with tempfile.TemporaryDirectory(prefix="bench-peers-") as tmp:
        work = Path(tmp)
        npz = work / f"{name}.npz"
        np.savez(
            npz,
            X=x,
            y=y,
            train=train,
            test=test,
            seeds=np.array(seeds),
            initial=init,
            n_classes=np.int64(n_classes),
        )
        ours: dict[str, list[dict[str, Any]]] = {}
        t0 = time.perf_counter()
        warm_budget = min(args.budget, args.initial + args.step)
        with threadpool_limits(limits=args.threads):
            for strat in OUR_STRATEGIES:  # untimed warm-up: imports, first calls
                run_ours(
                    strat,
                    data,
                    init[0],
                    seeds[0],
                    n_classes=n_classes,
                    step=args.step,
                    budget=warm_budget,
                    C=args.C,
                    max_iter=args.max_iter,
                )
            for strat in OUR_STRATEGIES:
                ours[strat] = []
                for i, seed in enumerate(seeds):
                    t = time.perf_counter()
                    curve = run_ours(
                        strat,
                        data,
                        init[i],
                        seed,
                        n_classes=n_classes,
                        step=args.step,
                        budget=args.budget,
                        C=args.C,
                        max_iter=args.max_iter,
                    )
                    curve["seconds"] = round(time.perf_counter() - t, 2)
                    ours[strat].append(curve)
                    say(f"  {OURS}:{strat} seed {seed}: {curve['seconds']} s")
        ours_s = time.perf_counter() - t0
        job = {
            "npz": str(npz),
            "out": str(work / "peers.json"),
            "strategies": list(args.peer_strategy or PEER_STRATEGIES),
            "seeds": seeds,
            "initial": args.initial,
            "step": args.step,
            "budget": args.budget,
            "C": args.C,
            "max_iter": args.max_iter,
            "threads": args.threads,
        }
        peer_result, peers_s = run_peers(args.peer_python, npz, job, work)
    rows = build_rows(ours, peer_result["strategies"])
    print_table(name, rows, len(seeds))
    consistent = start_consistent(rows)
    if not consistent:
        say("  warning: the contenders' first points differ: the protocols do not agree")
    return {
        "dataset": name,
        "classes": emb["classes"],
        "n_texts": int(x.shape[0]),
        "pool_size": int(train.shape[0]),
        "test_size": int(test.shape[0]),
        "embedder": emb["embedder"],
        "config": {
            "seeds": seeds,
            "initial": args.initial,
            "step": args.step,
            "budget": args.budget,
            "classifier": f"LogisticRegression(C={args.C}, max_iter={args.max_iter})",
            "threads": args.threads,
        },
        "start_accuracy_consistent": consistent,
        "peer_versions": peer_result.get("versions", {}),
        "peer_worker_exit_status": peer_result.get("worker_exit_status", 0),
        "platform": {"python": platform.python_version(), "machine": platform.machine()},
        "seconds": {
            "embed": round(emb["embed_seconds"], 2),
            "ours": round(ours_s, 2),
            "peers": round(peers_s, 2),
            "total": round(time.perf_counter() - t_start, 2),
        },
        "rows": rows,
    }


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--dataset",
        action="append",
        default=None,
        help=f"built-in dataset (repeatable; default {' '.join(DEFAULT_DATASETS)})",
    )
    p.add_argument("--seeds", type=int, default=5, help="seeds 0 .. N-1 (default 5)")
    p.add_argument("--initial", type=int, default=50)
    p.add_argument("--step", type=int, default=50)
    p.add_argument("--budget", type=int, default=500)
    p.add_argument("--C", type=float, default=1.0, help="LogisticRegression C (default 1.0)")
    p.add_argument("--max-iter", type=int, default=1000)
    p.add_argument("--threads", type=int, default=1, help="BLAS threads on both sides (default 1)")
    p.add_argument(
        "--peer-python",
        type=Path,
        default=DEFAULT_PEER_PYTHON,
        help=f"the peer virtualenv's python (default {DEFAULT_PEER_PYTHON})",
    )
    p.add_argument(
        "--peer-strategy",
        action="append",
        choices=PEER_STRATEGIES,
        help="peer strategies to run (repeatable; default all)",
    )
    p.add_argument("--out", type=Path, default=Path("runs/bench_peers"))
    args = p.parse_args(argv)
    args.dataset = args.dataset or list(DEFAULT_DATASETS)
    if args.seeds < 1 or args.initial < 2 or args.step < 1 or args.budget < args.initial:
        p.error("need --seeds >= 1, --initial >= 2, --step >= 1, --budget >= --initial")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    peer_python = args.peer_python
    if not peer_python.is_absolute():
        peer_python = (Path.cwd() / peer_python) if peer_python.exists() else ROOT / peer_python
    if not peer_python.exists():
        print(
            f"the peer virtualenv's python {args.peer_python} does not exist.\n"
            f"create it with: {SETUP_COMMAND}   (or pass --peer-python)",
            file=sys.stderr,
        )
        return 2
    args.peer_python = peer_python

    from loop.settings import Settings

    settings = Settings(model="embed-lr")
    args.out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    for name in args.dataset:
        result = bench_dataset(name, args, settings)
        path = args.out / f"{name}.json"
        path.write_text(json.dumps(result, indent=1), encoding="utf-8")
        say(f"wrote {path} ({result['seconds']['total']:.0f} s)")
    say(f"total {time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
