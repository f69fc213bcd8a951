"""`alloop curve` end to end on a slice of real data with the real offline model (slow)."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_curve_on_rotten_tomatoes_slice_embed_lr(tmp_path: Path, cache_dir: Path) -> None:
    from connectors.data import datasets

    ds = datasets.load("rotten-tomatoes", cache_dir)
    rng = np.random.default_rng(0)
    train, test = ds.split("train"), ds.split("test")
    rows = [train[i] for i in rng.choice(len(train), 300, replace=False)]
    rows += [test[i] for i in rng.choice(len(test), 200, replace=False)]
    f = tmp_path / "slice.csv"
    with f.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["id", "text", "label", "split"])
        w.writerows([it.id, it.text, ds.gold[it.id], it.split] for it in rows)
    env = {
        **os.environ,
        "ALLOOP_HOME": str(tmp_path / "home"),
        "ALLOOP_CACHE_DIR": str(cache_dir),
        "COLUMNS": "200",
    }

    def alloop(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "loop.cli", *args],
            capture_output=True,
            text=True,
            env=env,
            cwd=ROOT,
            timeout=300,
        )

    r = alloop("ingest", str(f))
    assert r.returncode == 0, r.stderr[-2000:]
    out = tmp_path / "curve"
    r = alloop("curve", "--repeats", "2", "--plus", "300", "--target", "0.72", "--out", str(out))
    assert r.returncode == 0, r.stderr[-3000:]
    assert "verdict: " in r.stdout and "+300 labels (600) -> " in r.stdout
    doc = json.loads((out / "curve.json").read_text())
    m, fc = doc["measured"], doc["forecast"]
    assert m["trainer"] == "embed-lr" and m["held_out"] == "test" and m["n_held_out"] == 200
    assert [p["n_labels"] for p in fc["points"]] == [30, 75, 150, 225, 300]
    assert all(len(p["accuracies"]) == 2 for p in fc["points"])
    first, last = fc["points"][0]["mean"], fc["points"][-1]["mean"]
    # frozen MiniLM + LR on critic snippets: ~0.70 with a few hundred random labels (2 classes)
    assert 0.6 < last < 0.85, last
    assert last > first  # it learns
    assert fc["ok"], fc["reason"]
    assert fc["verdict"] in ("labels still pay", "plateau reached")
    lo, hi = fc["expected_band"]
    assert lo <= fc["expected"] <= hi and 0.5 < fc["expected"] <= 1.0
    assert fc["expected"] >= fc["current"] - 1e-9  # more labels never predict less
    assert fc["asymptote"] >= fc["expected"]
    assert (out / "curve.png").stat().st_size > 10_000
