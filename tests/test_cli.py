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
