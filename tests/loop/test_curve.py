"""Measuring the learning curve on the real SQLite store with the tiny bag-of-words trainer
(pure logic, fast); files and the `alloop curve --from-summary` command line. The real model
on real data is in tests/test_curve_real.py (slow)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from connectors.store import SqlStore
from loop.curve import (
    MIN_HELD_OUT,
    measure_curve,
    parse_fractions,
    stratified_order,
    summary_points,
    write_curve,
)
from loop.errors import ConfigError, DataError
from loop.forecast import CurvePoint, forecast
from loop.records import Item, Label
from tests.fakes import BowTrainer, toy_corpus

ROOT = Path(__file__).resolve().parents[2]


class RecordingTrainer(BowTrainer):
    """The bag-of-words trainer, remembering what each call trained on."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[list[str], list[str], int]] = []

    def train(self, texts, labels, *, classes, seed, progress=None):  # type: ignore[no-untyped-def]
        self.calls.append((list(texts), list(labels), seed))
        return super().train(texts, labels, classes=classes, seed=seed)


def make_store(
    path: Path, *, n_train: int, n_test: int, n_eval: int = 0, per_class: int = 60
) -> tuple[SqlStore, list[str]]:
    """Toy sentiment items: ``n_train`` labeled train items, ``n_test`` labeled test items and
    ``n_eval`` labeled eval items (moved from the pool), the rest in the pool."""
    rows, classes = toy_corpus(per_class)
    rng = np.random.default_rng(0)
    order = rng.permutation(len(rows))
    rows = [rows[i] for i in order]
    store = SqlStore.open(f"sqlite:///{path}")
    test = rows[:n_test]
    train = rows[n_test : n_test + n_train]
    ev = rows[n_test + n_train : n_test + n_train + n_eval]
    store.add_items(
        [
            Item(id=i, text=t, split="test" if k < n_test else "train")
            for k, (i, t, _) in enumerate(rows)
        ]
    )
    if ev:
        store.assign_split([i for i, _, _ in ev], "eval")
    store.add_labels(
        [
            Label(item_id=i, value=y, source="import", annotation_id=f"import:{i}")
            for i, _, y in test + train + ev
        ]
    )
    return store, classes


def test_stratified_order_prefixes_keep_the_class_shares() -> None:
    for seed in range(30):
        rng = np.random.default_rng(seed)
        k = int(rng.integers(2, 7))
        n = int(rng.integers(k, 150))
        labels = [f"c{i}" for i in rng.choice(k, n, p=rng.dirichlet(np.ones(k)))]
        order = stratified_order(labels, np.random.default_rng(seed))
        assert sorted(order.tolist()) == list(range(n))
        y = np.array(labels)[order]
        counts = Counter(labels)
        assert set(y[: len(counts)]) == set(counts)  # one of each class first
        for m in range(1, n + 1):
            for c, nc in counts.items():
                assert abs(int(np.sum(y[:m] == c)) - m * nc / n) <= 2 + len(counts) / 2, (
                    seed,
                    m,
                    c,
                )
    a = stratified_order(labels, np.random.default_rng(7))
    b = stratified_order(labels, np.random.default_rng(7))
    assert np.array_equal(a, b)


def test_measure_curve_on_the_test_split_trains_nested_stratified_subsets(tmp_path: Path) -> None:
    store, classes = make_store(tmp_path / "s.db", n_train=80, n_test=30)
    trainer = RecordingTrainer()
    try:
        m = measure_curve(store, trainer, classes, (0.1, 0.25, 0.5, 1.0), repeats=3, seed=4)
        ts = store.training_set()
    finally:
        store.close()
    assert m.held_out == "test" and m.n_held_out == 30 and m.n_labels == 80
    assert [p.n_labels for p in m.points] == [8, 20, 40, 80]
    assert all(len(p.accuracies) == 3 for p in m.points)
    assert all(0.0 <= a <= 1.0 for p in m.points for a in p.accuracies)
    assert len(trainer.calls) == 12 and len(m.runs) == 12
    gold = dict(zip(ts.texts, ts.labels, strict=True))
    for r in range(3):
        calls = trainer.calls[4 * r : 4 * r + 4]
        assert {seed for _, _, seed in calls} == {4 + r}
        for (small, _, _), (big, _, _) in zip(calls, calls[1:], strict=False):
            assert set(small) < set(big)  # nested
        for texts, labels, _ in calls:
            assert [gold[t] for t in texts] == labels  # texts keep their labels
            counts = Counter(labels)
            assert abs(counts["pos"] - counts["neg"]) <= 2  # the training set is balanced
    # different repeats draw different subsets
    assert set(trainer.calls[0][0]) != set(trainer.calls[4][0])
    # the toy task is learnable: more labels are not worse on average
    assert m.points[-1].mean >= m.points[0].mean


def test_measure_curve_prefers_a_labeled_eval_sample(tmp_path: Path) -> None:
    store, classes = make_store(tmp_path / "s.db", n_train=60, n_test=30, n_eval=MIN_HELD_OUT)
    try:
        m = measure_curve(store, BowTrainer(), classes, (0.5, 1.0), repeats=1)
    finally:
        store.close()
    assert m.held_out == "eval" and m.n_held_out == MIN_HELD_OUT


def test_measure_curve_holds_out_part_of_the_labels_when_there_is_no_held_out_data(
    tmp_path: Path,
) -> None:
    store, classes = make_store(tmp_path / "s.db", n_train=100, n_test=0, n_eval=5)
    trainer = RecordingTrainer()
    try:
        m = measure_curve(store, trainer, classes, (0.5, 1.0), repeats=2)
    finally:
        store.close()
    assert m.held_out == "holdout" and m.n_held_out == 20 and m.n_labels == 100
    assert [p.n_labels for p in m.points] == [40, 80]  # fractions of the 80 kept for training
    assert all(r["n_held_out"] == 20 for r in m.runs)
    assert set(trainer.calls[1][0]) != set(trainer.calls[3][0])  # each repeat its own hold-out
    fc = forecast(m.points, n_current=m.n_labels, n_boot=0)
    assert fc.n_current == 100  # the forecast starts from all labels


def test_measure_curve_refuses_without_anything_to_measure_on(tmp_path: Path) -> None:
    store, classes = make_store(tmp_path / "s.db", n_train=20, n_test=5)
    try:
        with pytest.raises(ConfigError) as e:
            measure_curve(store, BowTrainer(), classes)
    finally:
        store.close()
    msg = str(e.value)
    assert (
        "no held-out data" in msg and "5 labeled test items" in msg and "20 training labels" in msg
    )
    assert "Fix:" in msg


def test_measure_curve_needs_two_classes_and_good_options(tmp_path: Path) -> None:
    store, classes = make_store(tmp_path / "s.db", n_train=0, n_test=30)
    try:
        with pytest.raises(ConfigError, match=">= 2 classes"):
            measure_curve(store, BowTrainer(), classes)
        with pytest.raises(ConfigError, match=r"in \(0, 1\]"):
            measure_curve(store, BowTrainer(), classes, fractions=(0.0, 0.5))
        with pytest.raises(ConfigError, match="repeats"):
            measure_curve(store, BowTrainer(), classes, repeats=0)
    finally:
        store.close()
    store, classes = make_store(tmp_path / "t.db", n_train=40, n_test=30)
    try:
        with pytest.raises(DataError, match="not among the project's classes"):
            measure_curve(store, BowTrainer(), ["pos", "other"])
    finally:
        store.close()


def test_parse_fractions() -> None:
    assert parse_fractions("1, 0.25,0.1,0.25") == (0.1, 0.25, 1.0)
    for bad in ("0.1,abc", "0,0.5", "1.5", ""):
        with pytest.raises(ConfigError, match="fractions"):
            parse_fractions(bad)


def _summary() -> dict:
    def run(seed: int, acc: list[float]) -> dict:
        return {"seed": seed, "labels": [20, 40, 60, 80], "accuracy": acc, "macro_f1": acc}

    return {
        "dataset": "toy",
        "model": "fake-bow",
        "classes": ["neg", "pos"],
        "pool_size": 500,
        "test_size": 100,
        "full_data_accuracy": {"mean": 0.9, "per_seed": [0.9]},
        "strategies": {
            "random": {
                "labels": [20, 40, 60, 80],
                "accuracy": [0.6, 0.7, 0.75, 0.77],
                "per_seed": [
                    run(0, [0.58, 0.69, 0.74, 0.78]),
                    run(1, [0.62, 0.71, 0.76, 0.76]),
                ],
            },
            "margin": {"labels": [20, 40, 60, 80], "accuracy": [0.6, 0.72, 0.8, 0.82]},
        },
    }


def test_summary_points_use_the_seeds_as_repeats() -> None:
    pts, info = summary_points(_summary(), "random")
    assert pts == [
        CurvePoint(20, (0.58, 0.62)),
        CurvePoint(40, (0.69, 0.71)),
        CurvePoint(60, (0.74, 0.76)),
        CurvePoint(80, (0.78, 0.76)),
    ]
    assert info["n_labels"] == 80 and info["repeats"] == 2 and info["n_held_out"] == 100
    pts, info = summary_points(_summary(), "margin")  # no per-seed runs: the mean curve
    assert [p.accuracies for p in pts] == [(0.6,), (0.72,), (0.8,), (0.82,)]
    with pytest.raises(ConfigError, match="random, margin"):
        summary_points(_summary(), "entropy")
    with pytest.raises(DataError, match="not a simulation summary"):
        summary_points({"dataset": "x"}, "random")


def test_write_curve_files(tmp_path: Path) -> None:
    pts, info = summary_points(_summary(), "random")
    fc = forecast(pts, plus=40, target=0.8, n_boot=40)
    paths = write_curve(fc, info, tmp_path / "out", "toy")
    doc = json.loads(paths["json"].read_text())
    assert doc["measured"]["source"] == "summary" and doc["forecast"]["plus"] == 40
    assert doc["forecast"]["verdict"] == fc.verdict and doc["text"][-1].startswith(
        ("verdict", "note")
    )
    assert paths["plot"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert paths["plot"].stat().st_size > 10_000
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["curve.json", "curve.png"]
    # no forecast: still a plot of the points and a JSON that says why
    flat = forecast([CurvePoint(n, (0.5,)) for n in (10, 20, 40)])
    paths = write_curve(flat, {"source": "test"}, tmp_path / "flat")
    doc = json.loads(paths["json"].read_text())
    assert doc["forecast"]["ok"] is False and "flat" in doc["forecast"]["reason"]
    assert paths["plot"].stat().st_size > 5_000


def alloop(*args: str, home: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "ALLOOP_HOME": str(home), "COLUMNS": "200"}
    return subprocess.run(
        [sys.executable, "-m", "loop.cli", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=120,
    )


def test_cli_curve_from_a_simulation_summary(tmp_path: Path) -> None:
    summary = tmp_path / "run" / "summary.json"
    summary.parent.mkdir()
    summary.write_text(json.dumps(_summary()))
    r = alloop(
        "curve",
        "--from-summary",
        str(summary),
        "--plus",
        "40",
        "--target",
        "0.8",
        home=tmp_path / "h",
    )
    assert r.returncode == 0, r.stderr
    assert "+40 labels (120) -> " in r.stdout and "verdict: " in r.stdout
    assert "target 0.8000" in r.stdout
    doc = json.loads((tmp_path / "run" / "curve-random" / "curve.json").read_text())
    assert doc["measured"]["strategy"] == "random" and doc["forecast"]["n_current"] == 80
    assert (tmp_path / "run" / "curve-random" / "curve.png").exists()
    r = alloop("curve", "--from-summary", str(summary), "--strategy", "nope", home=tmp_path / "h")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "'nope' is not in the summary" in r.stderr
    r = alloop("curve", "--from-summary", str(summary), "--target", "85", home=tmp_path / "h")
    assert r.returncode == 2 and "(0, 1]" in r.stderr


def test_cli_curve_on_a_project_without_labels_says_what_to_do(tmp_path: Path) -> None:
    f = tmp_path / "items.csv"
    f.write_text("id,text,label\n1,good film,pos\n2,bad film,neg\n3,nice,\n")
    home = tmp_path / "h"
    assert alloop("ingest", str(f), home=home).returncode == 0
    r = alloop("curve", home=home)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "no held-out data" in r.stderr
