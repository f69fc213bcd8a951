"""Benchmark the query strategies: measure + top-k over a large probability matrix.

For every measure and dtype, in the same process and on the same input, times (best of N):

- ``ours``: the registered measure (validated, chunked) + ``strategies.top_k`` (ordered, seeded ties);
- ``ours-modal``: the modAL-backed wrapper (``strategies.modal_*``) + ``top_k``;
- ``reference``: the naive full-matrix numpy formula + ``np.argpartition`` (no validation,
  unordered top-k): the floor a plain implementation gets;
- ``modal-query``: modAL's own query function (``uncertainty_sampling`` & co.) on a stand-in
  estimator returning the same matrix (no validation, unordered top-k).

and the peak extra memory of one call (tracemalloc, a separate untimed run), then the ratios
ours / reference. Usage::

    python bench/bench_strategies.py [--n 1000000 --classes 10 --k 1000 --repeats 5 --json OUT]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import numpy as np

# Run as a script: import this checkout's package, whatever is installed.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import strategies  # noqa: E402
from strategies.modal_measures import FixedProbaEstimator  # noqa: E402

Runner = Callable[[np.ndarray], object]


def _reference_scores(name: str, proba: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The naive full-matrix formulas (what a first implementation writes), in the input dtype."""
    if name == "random":
        return rng.random(proba.shape[0])
    if name == "least-confidence":
        return 1.0 - proba.max(axis=1)
    if name == "margin":
        part = np.partition(proba, proba.shape[1] - 2, axis=1)
        return 1.0 - (part[:, -1] - part[:, -2])
    return -np.sum(proba * np.log(np.maximum(proba, np.finfo(proba.dtype).tiny)), axis=1)


def runners(name: str, k: int, seed: int) -> dict[str, Runner]:
    """The contenders for one measure, each a function of the probability matrix."""
    measure = strategies.get_measure(name)
    out: dict[str, Runner] = {
        "ours": lambda p: strategies.top_k(
            measure(p, np.random.default_rng(seed)), k, np.random.default_rng(seed)
        ),
        "reference": lambda p: np.argpartition(
            -_reference_scores(name, p, np.random.default_rng(seed)), k - 1
        )[:k],
    }
    if name == "random":
        return out
    modal_fn = {
        "least-confidence": strategies.modal_least_confidence,
        "margin": strategies.modal_margin,
        "entropy": strategies.modal_entropy,
    }[name]
    out["ours-modal"] = lambda p: strategies.top_k(modal_fn(p), k, np.random.default_rng(seed))

    from modAL.uncertainty import entropy_sampling, margin_sampling, uncertainty_sampling

    query = {
        "least-confidence": uncertainty_sampling,
        "margin": margin_sampling,
        "entropy": entropy_sampling,
    }[name]
    out["modal-query"] = lambda p: query(FixedProbaEstimator(p), p, n_instances=k)
    return out


def best_time(fn: Runner, proba: np.ndarray, repeats: int) -> float:
    fn(proba)  # warm-up (imports, page faults)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn(proba)
        times.append(time.perf_counter() - start)
    return min(times)


def peak_extra_bytes(fn: Runner, proba: np.ndarray) -> int:
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        fn(proba)
        return tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()


def run(n: int, classes: int, k: int, repeats: int, seed: int, dtypes: list[str]) -> dict:
    proba64 = np.random.default_rng(seed).dirichlet(np.full(classes, 0.5), size=n)
    rows = []
    for dtype in dtypes:
        proba = proba64 if dtype == "float64" else proba64.astype(dtype)
        for name in strategies.available():
            contenders = runners(name, k, seed)
            results = {
                label: {
                    "best_s": best_time(fn, proba, repeats),
                    "peak_extra_bytes": peak_extra_bytes(fn, proba),
                }
                for label, fn in contenders.items()
            }
            ref = results["reference"]
            for label, r in results.items():
                rows.append(
                    {
                        "measure": name,
                        "dtype": dtype,
                        "impl": label,
                        "best_ms": round(r["best_s"] * 1e3, 2),
                        "peak_extra_mib": round(r["peak_extra_bytes"] / 2**20, 2),
                        "peak_extra_pct_of_input": round(
                            100 * r["peak_extra_bytes"] / proba.nbytes, 1
                        ),
                        "time_vs_reference": round(r["best_s"] / ref["best_s"], 2),
                        "memory_vs_reference": round(
                            r["peak_extra_bytes"] / max(1, ref["peak_extra_bytes"]), 3
                        ),
                    }
                )
    # top-k alone: partition-based top_k vs a full argsort, on one score vector
    scores = np.random.default_rng(seed).random(n)
    select = {
        "top_k": best_time(
            lambda s: strategies.top_k(s, k, np.random.default_rng(seed)), scores, repeats
        ),
        "argpartition": best_time(lambda s: np.argpartition(-s, k - 1)[:k], scores, repeats),
        "full_argsort": best_time(lambda s: np.argsort(-s)[:k], scores, repeats),
    }
    return {
        "params": {"n": n, "classes": classes, "k": k, "repeats": repeats, "seed": seed},
        "machine": {
            "python": platform.python_version(),
            "numpy": np.__version__,
            "cpus": os.cpu_count(),
            "processor": platform.processor() or platform.machine(),
        },
        "rows": rows,
        "selection_ms": {key: round(v * 1e3, 2) for key, v in select.items()},
    }


def print_table(result: dict) -> None:
    p = result["params"]
    print(f"measure + top-{p['k']} over {p['n']:,} x {p['classes']}, best of {p['repeats']}")
    header = f"{'measure':<17}{'dtype':<9}{'impl':<13}{'best ms':>9}{'x ref':>7}{'peak MiB':>10}{'% input':>9}"
    print(header)
    print("-" * len(header))
    for r in result["rows"]:
        print(
            f"{r['measure']:<17}{r['dtype']:<9}{r['impl']:<13}{r['best_ms']:>9.1f}"
            f"{r['time_vs_reference']:>7.2f}{r['peak_extra_mib']:>10.1f}{r['peak_extra_pct_of_input']:>9.1f}"
        )
    s = result["selection_ms"]
    print(
        f"top-{p['k']} of {p['n']:,} scores: top_k {s['top_k']:.1f} ms (ordered, seeded ties), "
        f"argpartition {s['argpartition']:.1f} ms, full argsort {s['full_argsort']:.1f} ms"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1_000_000, help="items in the pool")
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--k", type=int, default=1000, help="items to select")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs; the best is kept")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--dtypes", nargs="+", default=["float32", "float64"])
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args(argv)
    if args.n < 1 or args.classes < 2 or not 1 <= args.k <= args.n or args.repeats < 1:
        parser.error("need n >= 1, classes >= 2, 1 <= k <= n and repeats >= 1")
    result = run(args.n, args.classes, args.k, args.repeats, args.seed, args.dtypes)
    print_table(result)
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
