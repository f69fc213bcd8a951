"""The command line as a user runs it (a subprocess, real SQLite store)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def alloop(
    *args: str, home: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    e = {**os.environ, "ALLOOP_HOME": str(home), "COLUMNS": "200", **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "loop.cli", *args],
        capture_output=True,
        text=True,
        env=e,
        cwd=ROOT,
        timeout=300,
    )


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / "home"


def test_help_on_every_command(home: Path) -> None:
    for cmd in (
        [],
        ["ingest"],
        ["simulate"],
        ["status"],
        ["data"],
        ["data", "fetch"],
        ["db", "upgrade"],
        ["run"],
        ["serve"],
        ["iterate"],
        ["nightly"],
        ["curve"],
        ["check"],
        ["models"],
        ["models", "promote"],
        ["models", "show"],
        ["config"],
    ):
        r = alloop(*cmd, "--help", home=home)
        assert r.returncode == 0, r.stderr
        assert "Usage" in r.stdout


def test_ingest_then_status(tmp_path: Path, home: Path) -> None:
    f = tmp_path / "items.csv"
    f.write_text(
        "id,text,label,split\n1,good film,pos,train\n2,bad film,neg,train\n3,nice,,train\n4,awful,neg,test\n"
    )
    r = alloop("ingest", str(f), home=home)
    assert r.returncode == 0, r.stderr
    assert (
        "4 new items" in r.stdout
        and "labels: 3 new" in r.stdout
        and "classes: neg, pos" in r.stdout
    )
    r = alloop("ingest", str(f), home=home)  # idempotent
    assert "0 new items, 4 already there" in r.stdout and "3 unchanged" in r.stdout
    r = alloop("status", "--json", home=home)
    assert r.returncode == 0, r.stderr
    st = json.loads(r.stdout)
    assert st["items"] == {"train": 3, "test": 1, "eval": 0}
    assert st["pool"] == 1 and st["labels_per_class"] == {"neg": 1, "pos": 1}


def test_bad_file_is_rejected_whole_with_one_clear_line(tmp_path: Path, home: Path) -> None:
    f = tmp_path / "bad.jsonl"
    f.write_text('{"id": "a", "text": "fine"}\n{"id": "b", "text": ""}\nnot json\n')
    r = alloop("ingest", str(f), home=home)
    assert r.returncode == 2
    assert "Traceback" not in r.stderr
    assert "line 2" in r.stderr and "line 3" in r.stderr and "--skip-invalid" in r.stderr
    st = json.loads(alloop("status", "--json", home=home).stdout)
    assert st["items"]["train"] == 0  # nothing half-written
    r = alloop("ingest", str(f), "--skip-invalid", home=home)
    assert r.returncode == 0 and "1 new items" in r.stdout and "skipped" in r.stderr


def test_errors_are_one_line_not_tracebacks(tmp_path: Path, home: Path) -> None:
    r = alloop("simulate", "--dataset", "no-such-dataset", home=home)
    assert (
        r.returncode == 2
        and "Traceback" not in r.stderr
        and "neither a built-in dataset" in r.stderr
    )
    r = alloop("simulate", "--dataset", "rotten-tomatoes", "--strategy", "nope", home=home)
    assert r.returncode == 2 and "Traceback" not in r.stderr and "margin" in r.stderr
    r = alloop("status", home=home, env={"ALLOOP_BATCH_SIZE": "-1"})
    assert r.returncode == 2 and "batch_size" in r.stderr and "Traceback" not in r.stderr


def test_models_list_and_show_say_how_a_version_was_trained(home: Path) -> None:
    from datetime import UTC, datetime

    from connectors.store import SqlStore
    from loop.records import ModelVersion

    home.mkdir(parents=True)
    config = {
        "trainer": "finetune",
        "epochs": 10,
        "warm_start_from": "v0001-aaaa",
        "training": {
            "best_epoch": 3,
            "stopped_early": True,
            "curve": [{"epoch": e, "val_loss": 1.0 / e} for e in range(1, 6)],
        },
        "tuning": {"source": "reused", "from": "v0001-aaaa", "params": {"learning_rate": 1e-4}},
    }
    store = SqlStore.open(f"sqlite:///{home / 'alloop.db'}")
    try:
        store.add_model_version(
            ModelVersion(
                id="v0002-bbbb",
                trainer="finetune",
                path=str(home / "models" / "v0002-bbbb"),
                classes=("neg", "pos"),
                n_labels=40,
                label_revision=40,
                metrics={"test_accuracy": 0.8, "promotion": {"reason": "rule always"}},
                config=config,
                iteration=None,
                status="promoted",
                created_at=datetime.now(UTC),
            )
        )
    finally:
        store.close()
    env = {"ALLOOP_CLASSES": '["neg","pos"]', "ALLOOP_COLD_START": "random"}
    r = alloop("models", "list", home=home, env=env)
    assert r.returncode == 0, r.stderr
    assert "warm from v0001-aaaa, epoch 3/5 (stopped early of 10), tuning of v0001-aaaa" in r.stdout
    r = alloop("models", "show", "v0002-bbbb", home=home, env=env)
    assert r.returncode == 0, r.stderr
    shown = json.loads(r.stdout)
    assert shown["config"]["training"]["curve"][2] == {"epoch": 3, "val_loss": 1 / 3}
    assert shown["config"]["tuning"]["params"] == {"learning_rate": 1e-4}
    r = alloop("models", "show", "v9999", home=home, env=env)
    assert r.returncode != 0 and "v9999" in r.stderr and "Traceback" not in r.stderr


def test_check_reports_planted_problems_with_the_real_model(tmp_path: Path, home: Path) -> None:
    """`alloop check` with the offline MiniLM and cleanlab: a leak, a conflict and an
    over-length text are found; --strict fails on the leak; status shows the findings; bad
    options get one clear line; no label is changed."""
    pos = ["a warm, funny and moving film", "great acting and a fine story", "a joy to watch"]
    neg = ["a dull and boring mess", "awful acting and a weak plot", "tedious, flat and long"]
    rows = []
    for i in range(12):
        rows.append((f"p{i}", f"{pos[i % 3]} (review {i})", "pos", "train"))
        rows.append((f"n{i}", f"{neg[i % 3]} (review {i})", "neg", "train"))
    rows += [
        ("leak1", "the very same sentence sits in both splits", "pos", "train"),
        ("leak2", "The very same sentence sits in both  splits", "pos", "test"),
        ("c1", "one text with two answers", "pos", "train"),
        ("c2", "one text with two answers", "neg", "train"),
        ("long", " ".join(["word"] * 300), "neg", "train"),
    ]
    f = tmp_path / "items.jsonl"
    f.write_text(
        "".join(
            json.dumps({"id": i, "text": t, "label": y, "split": sp}) + "\n" for i, t, y, sp in rows
        )
    )
    assert alloop("ingest", str(f), home=home).returncode == 0
    before = json.loads(alloop("status", "--json", home=home).stdout)["labels_per_class"]
    out_file = tmp_path / "report.json"
    r = alloop("check", "--out", str(out_file), "--folds", "3", home=home)
    assert r.returncode == 0, r.stderr
    assert "leak" in r.stdout and "LEAK" in r.stdout and "conflicting-labels" in r.stdout
    report = json.loads(out_file.read_text())
    f_ = {x["check"]: x for x in report["findings"]}
    assert f_["leak"]["count"] == 1 and f_["leak"]["examples"][0]["item_id"] == "leak1"
    assert f_["conflicting-labels"]["count"] == 1
    assert [e["item_id"] for e in f_["over-length"]["examples"]] == ["long"]
    assert f_["label-errors"]["severity"] in ("ok", "warning")
    assert "out-of-fold accuracy" in f_["label-errors"]["message"]
    r = alloop("check", "--strict", "--no-label-errors", home=home)
    assert r.returncode == 1
    st = json.loads(alloop("status", "--json", home=home).stdout)
    assert st["quality"]["errors"] == ["leak", "conflicting-labels"] and not st["quality"]["stale"]
    assert st["labels_per_class"] == before  # the check changed no label
    assert "data check" in alloop("status", home=home).stdout
    r = alloop("check", "--near-threshold", "1.5", home=home)
    assert r.returncode == 2 and "near_threshold" in r.stderr and "Traceback" not in r.stderr
