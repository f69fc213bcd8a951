from __future__ import annotations

import math
from pathlib import Path

import pytest

from loop.errors import ConfigError
from loop.metrics import accuracy, macro_f1, normalised_auc
from loop.settings import load_settings


def test_accuracy_and_macro_f1_by_hand() -> None:
    y = ["a", "a", "b", "b", "c"]
    p = ["a", "b", "b", "b", "a"]
    assert accuracy(y, p) == pytest.approx(3 / 5)
    # a: tp1 fp1 fn1 -> 0.5 ; b: tp2 fp1 fn0 -> 0.8 ; c: tp0 fp0 fn1 -> 0
    assert macro_f1(y, p, ["a", "b", "c", "d"]) == pytest.approx((0.5 + 0.8 + 0.0) / 3)
    assert math.isnan(accuracy([], []))
    with pytest.raises(ValueError, match="3 entries but y_pred has 2"):
        accuracy(["a", "b", "c"], ["a", "b"])


def test_normalised_auc() -> None:
    assert normalised_auc([0, 10], [0.5, 0.7]) == pytest.approx(0.6)
    assert normalised_auc([100, 200, 400], [0.6, 0.8, 0.8]) == pytest.approx(
        (0.7 * 100 + 0.8 * 200) / 300
    )
    assert normalised_auc([50], [0.66]) == pytest.approx(0.66)


def test_settings_defaults_env_file_and_overrides(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    s = load_settings()
    assert s.model == "embed-lr" and s.db_url.endswith("alloop.db")
    monkeypatch.setenv("ALLOOP_FINETUNE__EPOCHS", "3")
    monkeypatch.setenv("ALLOOP_BATCH_SIZE", "7")
    cfg = tmp_path / "alloop.toml"
    cfg.write_text('strategy = "entropy"\nbatch_size = 9\n[embed_lr]\nC = 0.5\n')
    s = load_settings(cfg, home=tmp_path, batch_size=None)
    assert s.finetune.epochs == 3
    assert s.strategy == "entropy" and s.embed_lr.C == 0.5
    assert s.batch_size == 7  # the environment wins over the file
    assert load_settings(cfg, batch_size=11).batch_size == 11
    assert s.db_url == f"sqlite:///{tmp_path / 'alloop.db'}"


def test_settings_errors_are_clear(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"batch_size: .*greater than or equal to 1 \(got 0\)"):
        load_settings(batch_size=0)
    with pytest.raises(ConfigError, match="model: .*got 'bert-huge'"):
        load_settings(model="bert-huge")
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("strategy = ")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings(bad)
    with pytest.raises(ConfigError, match="unknown_key: Extra inputs are not permitted"):
        load_settings(unknown_key=1)


@pytest.mark.parametrize("model", ["embed-lr", "finetune", "tfidf-lr", "ladder"])
def test_every_model_setting_builds_its_trainer(model: str, tmp_path: Path) -> None:
    from loop.wiring import make_trainer

    s = load_settings(model=model, cache_dir=tmp_path)
    trainer = make_trainer(s)
    assert trainer.name == model
    cfg = trainer.config()
    if model == "ladder":
        assert cfg["margin"] == s.ladder.margin and list(cfg["rungs"]) == s.ladder.rungs
    elif model == "tfidf-lr":
        assert cfg["C"] == s.tfidf_lr.C
    elif model == "embed-lr":
        assert cfg["C"] == s.embed_lr.C


def test_finetune_small_data_settings_reach_the_trainer_and_the_controller(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from connectors.store import SqlStore
    from loop.oracle import OracleTool
    from loop.wiring import build_controller, make_trainer

    monkeypatch.setenv("ALLOOP_FINETUNE__PATIENCE", "2")
    monkeypatch.setenv("ALLOOP_FINETUNE__TUNE", "nightly")
    s = load_settings(
        model="finetune",
        home=tmp_path,
        finetune={"epochs": 9, "init": "previous", "adapt_epochs": 1, "tune_budget_s": 30},
    )
    assert s.finetune.patience == 2 and s.finetune.tune == "nightly"
    assert "tune" not in s.finetune.trainer_params()
    trainer = make_trainer(s)
    cfg = trainer.config()
    assert (cfg["epochs"], cfg["patience"], cfg["init"], cfg["adapt_epochs"]) == (
        9,
        2,
        "previous",
        1,
    )
    assert trainer.adapt_dir == s.cache / "adapted"  # type: ignore[attr-defined]
    store = SqlStore.open(f"sqlite:///{tmp_path / 'state.db'}")
    try:
        ctrl = build_controller(s, store, OracleTool({}), ["a", "b"])
        assert (ctrl.tune, ctrl.tune_budget_s) == ("nightly", 30.0)
        # tuning belongs to finetune: another model keeps it off
        other = build_controller(
            load_settings(model="tfidf-lr", home=tmp_path, finetune={"tune": "always"}),
            store,
            OracleTool({}),
            ["a", "b"],
        )
        assert other.tune == "off"
    finally:
        store.close()


def test_finetune_small_data_settings_errors_are_clear() -> None:
    with pytest.raises(ConfigError, match="finetune.init"):
        load_settings(finetune={"init": "latest"})
    with pytest.raises(ConfigError, match="finetune.tune"):
        load_settings(finetune={"tune": "weekly"})
    with pytest.raises(ConfigError, match="finetune.patience"):
        load_settings(finetune={"patience": 0})


def test_settings_passed_through_the_environment_come_back_equal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What ``alloop serve`` and the tests hand a worker process: every set field, nested
    ones and lists included, and nothing else (unset fields keep their defaults)."""
    from loop.settings import Settings, as_environment

    s = Settings(
        home=tmp_path / "h",
        cache_dir=tmp_path / "c",
        batch_size=7,
        classes=["neg", "pos"],
        refill_below=0,
        label_studio={"url": "http://127.0.0.1:1", "token": "t", "poll_seconds": 0.5},
        service={"worker": "thread", "lease_seconds": 5.0, "connect_ml_backend": False},
        finetune={"epochs": 3},
    )
    env = as_environment(s)
    assert env["ALLOOP_LABEL_STUDIO__POLL_SECONDS"] == "0.5"
    assert env["ALLOOP_SERVICE__CONNECT_ML_BACKEND"] == "false"
    assert env["ALLOOP_CLASSES"] == '["neg", "pos"]'
    assert "ALLOOP_STRATEGY" not in env  # not set: the child keeps the default too
    for k in [k for k in __import__("os").environ if k.startswith("ALLOOP_")]:
        monkeypatch.delenv(k)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    assert load_settings().model_dump() == s.model_dump()
