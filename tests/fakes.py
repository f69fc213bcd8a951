"""Test doubles for pure-logic tests of the controller. They are NOT evidence that a real
connector works: the real model, store and Label Studio have their own tests."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from loop.errors import ModelError
from loop.progress import SILENT, Progress

DIM = 256


def _vec(text: str) -> np.ndarray:
    v = np.zeros(DIM)
    for tok in re.findall(r"\w+", text.lower()):
        v[int(hashlib.md5(tok.encode()).hexdigest(), 16) % DIM] += 1
    return v


class BowClassifier:
    """Multinomial naive Bayes over hashed words."""

    def __init__(self, classes: Sequence[str], log_prior: np.ndarray, log_lik: np.ndarray) -> None:
        self._classes = tuple(classes)
        self.log_prior = log_prior
        self.log_lik = log_lik

    @property
    def classes(self) -> tuple[str, ...]:
        return self._classes

    @property
    def version(self) -> str:
        return hashlib.sha1(self.log_lik.tobytes() + self.log_prior.tobytes()).hexdigest()[:12]

    def predict_proba(self, texts: Sequence[str], progress: Progress = SILENT) -> np.ndarray:
        if not len(texts):
            return np.zeros((0, len(self._classes)))
        x = np.stack([_vec(t) for t in texts])
        logits = x @ self.log_lik.T + self.log_prior
        logits -= logits.max(axis=1, keepdims=True)
        p = np.exp(logits)
        return p / p.sum(axis=1, keepdims=True)

    def save(self, path: Path) -> None:
        path.mkdir(parents=True, exist_ok=True)
        (path / "bow.json").write_text(
            json.dumps(
                {
                    "classes": list(self._classes),
                    "prior": self.log_prior.tolist(),
                    "lik": self.log_lik.tolist(),
                }
            )
        )


class BowTrainer:
    name = "fake-bow"

    def __init__(self) -> None:
        self.train_calls = 0
        self.fail_next_train = False

    def train(self, texts, labels, *, classes, seed, progress=SILENT):  # type: ignore[no-untyped-def]
        if self.fail_next_train:
            self.fail_next_train = False
            raise RuntimeError("injected failure in train")
        if len(set(labels)) < 2:
            raise ModelError("need 2 classes")
        self.train_calls += 1
        x = np.stack([_vec(t) for t in texts])
        y = np.array(labels, dtype=object)
        prior = np.array([np.log((np.sum(y == c) + 1) / (len(y) + len(classes))) for c in classes])
        lik = np.stack(
            [np.log((x[y == c].sum(axis=0) + 1) / (x[y == c].sum() + DIM)) for c in classes]
        )
        return BowClassifier(classes, prior, lik)

    def load(self, path: Path) -> BowClassifier:
        d = json.loads((Path(path) / "bow.json").read_text())
        return BowClassifier(d["classes"], np.array(d["prior"]), np.array(d["lik"]))

    def config(self) -> dict:
        return {"trainer": self.name}


POS = [
    "a wonderful, moving film",
    "brilliant acting and a great script",
    "funny, warm and delightful",
    "a triumph of great storytelling",
    "superb, smart and wonderful",
    "delightful and beautifully made",
    "great fun with brilliant jokes",
    "moving and superb performances",
    "a smart, funny delight",
    "beautifully shot and wonderful",
]
NEG = [
    "a dull, boring mess",
    "terrible acting and an awful script",
    "tedious, flat and lifeless",
    "a boring failure of storytelling",
    "awful, stupid and dull",
    "lifeless and badly made",
    "terrible jokes and no fun",
    "flat and tedious performances",
    "a stupid, boring waste",
    "badly shot and awful",
]


def toy_corpus(
    n_per_class: int = 30, seed: int = 0
) -> tuple[list[tuple[str, str, str]], list[str]]:
    """(id, text, label) rows built from the phrases above, plus filler words; deterministic."""
    rng = np.random.default_rng(seed)
    filler = [
        "the",
        "movie",
        "this",
        "story",
        "really",
        "quite",
        "overall",
        "plot",
        "cast",
        "ending",
    ]
    rows = []
    for label, bank in (("pos", POS), ("neg", NEG)):
        for i in range(n_per_class):
            words = bank[i % len(bank)] + " " + " ".join(rng.choice(filler, size=3))
            rows.append((f"{label}-{i:03d}", words, label))
    return rows, ["neg", "pos"]


def toy_store(db: Path) -> tuple[Any, list[Any], dict[str, str], set[str], list[str]]:
    """A SQLite store at ``db`` with the 40-item toy corpus: 20 seeded test items labeled by
    import, 20 unlabeled train items. Returns (store, items, gold, test_ids, classes)."""
    from connectors.store import SqlStore
    from loop.records import Item, Label

    rows, classes = toy_corpus(40)
    rng = np.random.default_rng(1)
    test_ids = set(rng.choice([r[0] for r in rows], size=20, replace=False))
    items = [Item(id=i, text=t, split="test" if i in test_ids else "train") for i, t, _ in rows]
    gold = {i: y for i, _, y in rows}
    store = SqlStore.open(f"sqlite:///{db}")
    store.add_items(items)
    store.add_labels(
        [
            Label(item_id=i, value=gold[i], source="import", annotation_id=f"import:{i}")
            for i in test_ids
        ]
    )
    return store, items, gold, test_ids, classes
