"""Benchmark the query strategies.

``--all`` (contract v2): every registered strategy and the TypiClust cold start over a pool of
``n`` items with 384-d unit embeddings, 10 classes, a 5-member committee and 1,000 labeled
items, for each ``k``: wall time of one selection and its peak extra memory (the process's
resident high-water mark over what the inputs already took), each in a fresh process so one
strategy's memory does not hide another's::

    python bench/bench_strategies.py --all --n 100000 1000000 --k 50 1000

Without ``--all``: the four measures over probabilities alone, measure + top-k over a large
probability matrix. For every measure and dtype, in the same process and on the same input,
times (best of N):

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
V1_MEASURES = ("random", "least-confidence", "margin", "entropy")  # scores from proba alone


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
        for name in V1_MEASURES:
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


# -- contract v2: every strategy ------------------------------------------------------------


def _inputs(n: int, classes: int, dim: int, members: int, labeled: int, seed: int) -> dict:
    """Synthetic pool: embeddings drawn around ``4 * classes`` unit centres (clustered, like
    sentence embeddings), probabilities from a softmax of a random linear head on them (so
    uncertainty follows the geometry), a committee of perturbed heads, ``labeled`` items."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((4 * classes, dim)).astype(np.float32)
    emb = np.empty((n, dim), dtype=np.float32)
    for a in range(0, n, 65536):
        b = min(n, a + 65536)
        block = centres[rng.integers(0, centres.shape[0], b - a)] * 0.35
        block += rng.standard_normal((b - a, dim)).astype(np.float32) / np.sqrt(dim)
        block /= np.linalg.norm(block, axis=1, keepdims=True)
        emb[a:b] = block
    head = rng.standard_normal((dim, classes)).astype(np.float32) * 3.0

    def softmax(z: np.ndarray) -> np.ndarray:
        z = z - z.max(axis=1, keepdims=True)
        e = np.exp(z)
        return e / e.sum(axis=1, keepdims=True)

    proba = np.empty((n, classes), dtype=np.float64)
    samples = np.empty((n, members, classes), dtype=np.float64)
    heads = [head + rng.standard_normal(head.shape).astype(np.float32) for _ in range(members)]
    for a in range(0, n, 65536):
        block = emb[a : a + 65536]
        proba[a : a + 65536] = softmax(block @ head)
        for t, h in enumerate(heads):
            samples[a : a + 65536, t] = softmax(block @ h)
    lab_idx = rng.choice(n, size=min(labeled, n), replace=False)
    return {
        "proba": proba,
        "proba_samples": samples,
        "embeddings": emb,
        "labeled_embeddings": emb[lab_idx].copy(),
        "labels": rng.integers(0, classes, lab_idx.shape[0]),
        "labeled_proba": proba[lab_idx].copy(),
    }


def _one(name: str, n: int, k: int, seed: int) -> dict:
    """One selection of ``name`` in this process: seconds and peak extra resident memory."""
    import resource

    import sklearn.cluster  # noqa: F401  (imported before timing, as a running service has)

    data = _inputs(n, 10, 384, 5, 1000, seed)
    if name == "typiclust":
        run_it: Callable[[], object] = lambda: strategies.typiclust(  # noqa: E731
            data["embeddings"], k, np.random.default_rng(seed)
        )
    else:
        st = strategies.get_measure(name)
        inputs = strategies.SelectionInputs(**{key: data[key] for key in st.needs})
        run_it = lambda: st.choose(inputs, k, np.random.default_rng(seed))  # noqa: E731
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    start = time.perf_counter()
    out = run_it()
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    # numpy reports its buffers to tracemalloc: the peak of what one call allocates (a second,
    # untimed call; the resident high-water mark above misses what the inputs' set-up freed)
    tracemalloc.start()
    run_it()
    traced = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    idx = out if isinstance(out, np.ndarray) else out[0]  # type: ignore[index]
    assert len(set(np.asarray(idx).tolist())) == min(k, n), "k distinct picks"
    inputs_mib = sum(v.nbytes for key, v in data.items()) / 2**20
    return {
        "strategy": name,
        "n": n,
        "k": k,
        "seconds": round(seconds, 3),
        "peak_extra_mib": round(max(peak - base, traced) / 2**20, 1),
        "inputs_mib": round(inputs_mib, 1),
    }


def run_all(ns: list[int], ks: list[int], seed: int, names: list[str]) -> list[dict]:
    import subprocess

    rows = []
    for n in ns:
        for k in ks:
            for name in names:
                cmd = [sys.executable, __file__, "--one", name, "--n", str(n), "--k", str(k)]
                cmd += ["--seed", str(seed)]
                done = subprocess.run(cmd, capture_output=True, text=True, check=False)
                if done.returncode != 0:
                    tail = (done.stderr or done.stdout).strip().splitlines()[-1:]
                    rows.append({"strategy": name, "n": n, "k": k, "error": " ".join(tail)})
                else:
                    rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
                r = rows[-1]
                print(
                    f"{r['strategy']:<22}{n:>10,}{k:>6}"
                    + (
                        f"{r['seconds']:>10.2f} s{r['peak_extra_mib']:>10.0f} MiB extra"
                        if "error" not in r
                        else f"  failed: {r['error']}"
                    ),
                    flush=True,
                )
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--all", action="store_true", help="every strategy (contract v2)")
    parser.add_argument("--one", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--strategies", nargs="+", default=None, help="with --all: these only")
    parser.add_argument(
        "--n", type=int, nargs="+", default=[1_000_000], help="items in the pool (--all: several)"
    )
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument(
        "--k", type=int, nargs="+", default=[1000], help="items to select (--all: several)"
    )
    parser.add_argument("--repeats", type=int, default=5, help="timed runs; the best is kept")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--dtypes", nargs="+", default=["float32", "float64"])
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args(argv)
    if args.one is not None:
        print(json.dumps(_one(args.one, args.n[0], args.k[0], args.seed)))
        return
    if args.all:
        names = args.strategies or [*strategies.available(), "typiclust"]
        print(f"{'strategy':<22}{'n':>10}{'k':>6}{'time':>12}{'peak extra':>20}")
        rows = run_all(args.n, args.k, args.seed, names)
        if args.json is not None:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            machine = {"python": platform.python_version(), "cpus": os.cpu_count()}
            args.json.write_text(json.dumps({"machine": machine, "rows": rows}, indent=2) + "\n")
            print(f"wrote {args.json}")
        return
    args.n, args.k = args.n[0], args.k[0]
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
