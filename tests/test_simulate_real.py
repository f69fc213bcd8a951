"""`alloop simulate` end to end on real data with the real offline model (slow)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_simulate_bbc_news_embed_lr(tmp_path: Path, cache_dir: Path) -> None:
    out = tmp_path / "out"
    env = {**os.environ, "ALLOOP_HOME": str(tmp_path / "home"), "ALLOOP_CACHE_DIR": str(cache_dir)}
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "loop.cli",
            "simulate",
            "--dataset",
            "bbc-news",
            "--strategy",
            "margin",
            "--strategy",
            "entropy",
            "--initial",
            "20",
            "--step",
            "20",
            "--budget",
            "80",
            "--seeds",
            "2",
            "--cold-start",
            "diverse",
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=900,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    s = json.loads((out / "summary.json").read_text())
    assert s["pool_size"] + s["test_size"] == 2125 and s["classes"] == sorted(s["classes"])
    assert list(s["strategies"]) == ["random", "margin", "entropy"]
    for name, st in s["strategies"].items():
        assert st["labels"] == [20, 40, 60, 80], name
        # 5 balanced-ish topics: chance is ~0.24; MiniLM embeddings + LR are far above it
        assert st["final_accuracy"] > 0.75, (name, st["accuracy"])
    # every model is below the same model trained on all 1,699 pool labels (~0.96)
    full = s["full_data_accuracy"]["mean"]
    assert full > 0.9
    assert all(st["final_accuracy"] <= full + 0.02 for st in s["strategies"].values())
    assert (out / "curves.png").stat().st_size > 10_000
