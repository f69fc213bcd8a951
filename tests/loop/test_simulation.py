"""Simulation orchestration on the real SQLite store with the tiny trainer (fast, pure logic).
The real-model simulation on real data is in tests/test_simulate_real.py (slow)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from connectors.store import SqlStore
from loop.errors import ConfigError
from loop.records import Item
from loop.report import write_summary
from loop.simulation import SimulationConfig, run_simulation, strategy_order
from tests.fakes import BowTrainer, toy_corpus


def _data(n: int = 60):  # type: ignore[no-untyped-def]
    rows, classes = toy_corpus(n)
    rng = np.random.default_rng(0)
    test = set(rng.choice([r[0] for r in rows], size=30, replace=False))
    items = [Item(id=i, text=t, split="test" if i in test else "train") for i, t, _ in rows]
    return items, {i: y for i, _, y in rows}, classes


def test_strategy_order_puts_random_first_once() -> None:
    assert strategy_order(["margin", "random", "least_confidence", "margin"]) == (
        "random",
        "margin",
        "least-confidence",
    )


def test_simulation_summary_curves_and_files(tmp_path: Path) -> None:
    items, gold, classes = _data()
    cfg = SimulationConfig(strategies=("margin", "entropy"), initial=10, step=7, budget=31, seeds=2)
    summary = run_simulation(
        dataset="toy",
        items=items,
        gold=gold,
        classes=classes,
        trainer=BowTrainer(),
        make_store=lambda tag: SqlStore.open(f"sqlite:///{tmp_path / tag}.db"),
        work_dir=tmp_path / "work",
        config=cfg,
    )
    assert list(summary["strategies"]) == ["random", "margin", "entropy"]
    for name, s in summary["strategies"].items():
        assert s["labels"] == [10, 17, 24, 31], name  # the last step is cut to the budget
        assert len(s["per_seed"]) == 2 and len(s["accuracy"]) == 4
        assert all(0 <= a <= 1 for a in s["accuracy"])
        assert s["final_accuracy"] == pytest.approx(
            np.mean([r["accuracy"][-1] for r in s["per_seed"]])
        )
        assert min(s["accuracy"]) - 1e-9 <= s["auc"] <= max(s["accuracy"]) + 1e-9
        # per class at the last point, averaged over the seeds; supports add up to the test split
        pc = s["final_per_class"]
        assert set(pc) == set(classes)
        assert sum(c["support"] for c in pc.values()) == pytest.approx(summary["test_size"])
        assert pc[classes[0]]["f1"] == pytest.approx(
            np.mean([r["final_per_class"][classes[0]]["f1"] for r in s["per_seed"]])
        )
    assert 0.5 < summary["full_data_accuracy"]["mean"] <= 1.0
    # same seed -> every strategy starts from the same cold-start batch (so the first point matches)
    for seed in range(2):
        firsts = {n: s["per_seed"][seed]["accuracy"][0] for n, s in summary["strategies"].items()}
        assert len(set(firsts.values())) == 1, firsts
        stores = {
            n: SqlStore.open(f"sqlite:///{tmp_path / f'{n}-seed{seed}'}.db")
            for n in summary["strategies"]
        }
        first_batches = {
            n: sorted(q.item_id for q in st.queries(iteration=1)) for n, st in stores.items()
        }
        later = {n: sorted(q.item_id for q in st.queries(iteration=2)) for n, st in stores.items()}
        for st in stores.values():
            st.close()
        assert len({tuple(v) for v in first_batches.values()}) == 1
        assert later["margin"] != later["random"]
    paths = write_summary(summary, tmp_path / "out")
    assert json.loads(paths["summary"].read_text())["strategies"]["margin"]["labels"] == [
        10,
        17,
        24,
        31,
    ]
    rows = list(csv.DictReader(paths["csv"].open()))
    assert {r["strategy"] for r in rows} == {"random", "margin", "entropy"}
    assert len(rows) == 3 * 4 * 3  # 3 strategies x 4 points x (mean + 2 seeds)
    assert paths["plot"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_simulation_config_errors(tmp_path: Path) -> None:
    items, gold, classes = _data(20)
    with pytest.raises(ConfigError, match="exceeds the pool"):
        run_simulation(
            dataset="toy",
            items=items,
            gold=gold,
            classes=classes,
            trainer=BowTrainer(),
            make_store=lambda tag: SqlStore.open(f"sqlite:///{tmp_path / tag}.db"),
            work_dir=tmp_path,
            config=SimulationConfig(("margin",), 5, 5, 10_000, 1),
        )
    with pytest.raises(ConfigError, match="below --initial"):
        SimulationConfig(("margin",), 50, 5, 10, 1).validate(100)
