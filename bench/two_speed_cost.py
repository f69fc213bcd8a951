"""What a retrain costs in each lane of the two-speed loop, at a full pool.

On Rotten Tomatoes (pool 10,201 texts), with ``--labels`` labeled items drawn at random:

- fast lane: ``embed-lr`` retrain (frozen MiniLM vectors from the embedding cache, filled once
  before the timing, as in a running loop) + scoring the whole pool (``predict_proba``);
- slow lane: ``setfit`` retrain (contrastive tuning, then the head) + re-embedding the whole pool
  with the tuned encoder (what ``Controller.train_slow`` does before the model's first selection)
  + scoring it from those cached vectors;
- the reference: one bare forward pass of the frozen encoder over the pool (no cache).

Every number is measured in the same run and reported as a ratio to the bare forward pass, since
the machines are shared. Usage::

    python bench/two_speed_cost.py [--labels 500] [--steps 64] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from connectors.data import datasets  # noqa: E402
from connectors.models import make_embedder, make_trainer  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--labels", type=int, default=500)
    ap.add_argument("--steps", type=int, default=64, help="setfit optimizer steps")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    cache = Path(os.environ.get("ALLOOP_CACHE_DIR", ".alloop/cache"))
    ds = datasets.load("rotten-tomatoes", cache)
    pool = [it for it in ds.items if it.split == "train"]
    rng = np.random.default_rng(args.seed)
    pick = [pool[i] for i in rng.permutation(len(pool))[: args.labels]]
    texts, labels = [it.text for it in pick], [ds.gold[it.id] for it in pick]
    pool_texts = [it.text for it in pool]
    out: dict[str, float | int | str] = {"pool": len(pool_texts), "labels": args.labels}

    with tempfile.TemporaryDirectory() as tmp:
        bare = make_embedder(None)
        t = time.perf_counter()
        bare.embed(pool_texts)
        out["forward_pass_s"] = time.perf_counter() - t

        fast = make_trainer("embed-lr", cache_dir=Path(tmp) / "emb")
        fast.embedder.embed(pool_texts)  # the loop's cache, filled at the first selection
        t = time.perf_counter()
        clf = fast.train(texts, labels, classes=ds.classes, seed=args.seed)
        out["embed_lr_train_s"] = time.perf_counter() - t
        t = time.perf_counter()
        clf.predict_proba(pool_texts)
        out["embed_lr_score_pool_s"] = time.perf_counter() - t

        slow = make_trainer(
            "setfit",
            cache_dir=Path(tmp) / "emb",
            max_steps=args.steps,
            min_steps=min(args.steps, 20),
            time_budget_s=3600,
        )
        t = time.perf_counter()
        sclf = slow.train(texts, labels, classes=ds.classes, seed=args.seed)
        out["setfit_train_s"] = time.perf_counter() - t
        out["setfit_steps"] = int(sclf.info["steps"])
        t = time.perf_counter()
        sclf.embed(pool_texts)
        out["setfit_reembed_pool_s"] = time.perf_counter() - t
        t = time.perf_counter()
        sclf.predict_proba(pool_texts)
        out["setfit_score_pool_cached_s"] = time.perf_counter() - t

    ref = float(out["forward_pass_s"])
    fast_total = float(out["embed_lr_train_s"]) + float(out["embed_lr_score_pool_s"])
    slow_total = (
        float(out["setfit_train_s"])
        + float(out["setfit_reembed_pool_s"])
        + float(out["setfit_score_pool_cached_s"])
    )
    out["fast_lane_total_s"] = fast_total
    out["slow_lane_total_s"] = slow_total
    out["fast_lane_x_forward"] = fast_total / ref
    out["slow_lane_x_forward"] = slow_total / ref
    out["slow_over_fast"] = slow_total / fast_total
    out["machine"] = f"{platform.machine()}, {os.cpu_count()} cores"
    for k, v in out.items():
        print(f"{k:28s} {v:.3f}" if isinstance(v, float) else f"{k:28s} {v}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
