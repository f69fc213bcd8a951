"""Several models instead of one.

- **Bagging** (:class:`BaggingTrainer`, Breiman 1996): ``members`` copies of a trainer, each on a
  bootstrap sample of the labels drawn within each class (every class keeps its examples'
  share; seeded). Prediction averages the members' probabilities; the members' probabilities
  side by side are the classifier's probability samples (``predict_proba_samples``), so the
  committee strategies (BALD, vote entropy) read them without training a committee again.
- **Stacking** (:class:`StackingTrainer`, Wolpert 1992): out-of-fold probabilities of every
  base trainer (stratified ``folds``) are the features of a multinomial logistic regression (the
  meta-learner); each base is then refitted on all labels. Prediction: the bases' probabilities
  through the meta-learner.

Saved as ``ensemble.json`` + ``member-<i>/`` (each member in its own format) [+ ``meta.npz``].
A folder without ``ensemble.json`` (a version trained before the ensemble was configured) loads
through the first base trainer, so switching the setting keeps old versions loadable.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from connectors.models._common import (
    atomic_directory,
    check_training_input,
    read_json,
    short_hash,
    write_json,
)
from loop.errors import ConfigError, ModelError
from loop.progress import SILENT, Progress
from loop.resample import class_bootstrap, stratified_folds

FORMAT = "alloop.ensemble/1"
META_FILE = "ensemble.json"
META_HEAD = "meta.npz"


def _member_dir(path: Path, i: int) -> Path:
    return path / f"member-{i}"


def bootstrap(labels: Sequence[str], rng: np.random.Generator) -> np.ndarray:
    """Indices of a bootstrap sample drawn within each class (sizes kept per class), sorted."""
    return np.sort(class_bootstrap(labels, rng))


class EnsembleClassifier:
    """Bagging: the mean of the members' probabilities. Stacking: the meta-learner over them."""

    def __init__(
        self,
        kind: str,
        members: Sequence[Any],
        classes: Sequence[str],
        config: Mapping[str, Any],
        meta: tuple[np.ndarray, np.ndarray] | None = None,
    ) -> None:
        self.kind = kind
        self.members = list(members)
        self._classes = tuple(classes)
        self.config = dict(config)
        self.meta = meta
        self._version = short_hash(
            FORMAT,
            kind,
            "\0".join(self._classes),
            *[m.version for m in self.members],
            *([a.astype("<f8").tobytes() for a in meta] if meta is not None else []),
        )
        encoder = next((m for m in self.members if hasattr(m, "embed")), None)
        if encoder is not None:
            self.embed = encoder.embed  # a member's own vectors, for the diversity strategies

    @property
    def classes(self) -> tuple[str, ...]:
        return self._classes

    @property
    def version(self) -> str:
        return self._version

    def _member_probas(self, texts: Sequence[str], progress: Progress) -> np.ndarray:
        return np.stack([m.predict_proba(texts, progress) for m in self.members], axis=1)

    def predict_proba(self, texts: Sequence[str], progress: Progress = SILENT) -> np.ndarray:
        probas = self._member_probas(texts, progress)
        if self.meta is None:
            return probas.mean(axis=1)
        return stack_predict(probas, *self.meta)

    def predict_proba_samples(
        self, texts: Sequence[str], n_samples: int, seed: int, progress: Progress = SILENT
    ) -> np.ndarray:
        """The members' probabilities, ``(n, members, C)`` (bagging; ``n_samples`` and
        ``seed`` are fixed by training: there are as many samples as members)."""
        return self._member_probas(texts, progress)

    def save(self, path: Path) -> None:
        with atomic_directory(Path(path)) as tmp:
            for i, m in enumerate(self.members):
                m.save(_member_dir(tmp, i))
            if self.meta is not None:
                np.savez(tmp / META_HEAD, coef=self.meta[0], intercept=self.meta[1])
            write_json(
                tmp / META_FILE,
                {
                    "format": FORMAT,
                    "kind": self.kind,
                    "members": len(self.members),
                    "classes": list(self._classes),
                    "version": self._version,
                    "config": self.config,
                },
            )


def stack_predict(probas: np.ndarray, coef: np.ndarray, intercept: np.ndarray) -> np.ndarray:
    """The meta-learner's softmax over the bases' probabilities, ``(n, B, C) -> (n, C)``."""
    z = probas.reshape(probas.shape[0], -1) @ coef.T + intercept
    if z.shape[1] == 1:  # binary logistic: p(class 1)
        p1 = 1.0 / (1.0 + np.exp(-z[:, 0]))
        return np.stack([1.0 - p1, p1], axis=1)
    z -= z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


class _EnsembleBase:
    name: str
    bases: list[Any]

    def __getattr__(self, name: str) -> Any:  # a base's extras (the embed-lr base's embedder)
        if name == "bases":
            raise AttributeError(name)
        for base in self.bases:
            if hasattr(base, name):
                return getattr(base, name)
        raise AttributeError(name)

    def load(self, path: Path) -> Any:
        path = Path(path)
        if not (path / META_FILE).is_file():
            return self.bases[0].load(path)  # a version from before the ensemble
        meta = read_json(path / META_FILE, "ensemble")
        if meta.get("format") != FORMAT:
            raise ModelError(
                f"expected {FORMAT} in {path / META_FILE}, found {meta.get('format')!r}",
                "retrain with this version of alloop.",
            )
        n = int(meta["members"])
        loaders = [self.bases[i % len(self.bases)] for i in range(n)]
        members = [loaders[i].load(_member_dir(path, i)) for i in range(n)]
        head = None
        if (path / META_HEAD).is_file():
            with np.load(path / META_HEAD, allow_pickle=False) as z:
                head = (np.asarray(z["coef"]), np.asarray(z["intercept"]))
        clf = EnsembleClassifier(meta["kind"], members, meta["classes"], meta["config"], head)
        if clf.version != meta.get("version"):
            raise ModelError(
                f"expected the ensemble in {path} to have version {meta.get('version')}, "
                f"found {clf.version}: the files were changed after saving.",
                "retrain or restore the model folder from a backup.",
            )
        return clf


class BaggingTrainer(_EnsembleBase):
    """``members`` copies of ``inner``, each on a stratified bootstrap sample."""

    def __init__(self, inner: Any, members: int = 5) -> None:
        if members < 2:
            raise ConfigError(f"ensemble.members: expected >= 2, found {members}", "use 5.")
        self.bases = [inner]
        self.inner = inner
        self.members = int(members)
        self.name = inner.name

    def config(self) -> Mapping[str, Any]:
        return {
            **dict(self.inner.config()),
            "ensemble": {"kind": "bagging", "members": self.members},
        }

    def train(
        self,
        texts: Sequence[str],
        labels: Sequence[str],
        *,
        classes: Sequence[str],
        seed: int,
        progress: Progress = SILENT,
    ) -> EnsembleClassifier:
        texts, labels, classes_t, _ = check_training_input(texts, labels, classes)
        rng = np.random.default_rng(seed)
        members = []
        with progress.task("bagging", total=self.members) as advance:
            for m in range(self.members):
                idx = bootstrap(labels, rng)
                members.append(
                    self.inner.train(
                        [texts[i] for i in idx],
                        [labels[i] for i in idx],
                        classes=classes_t,
                        seed=seed + 1 + m,
                    )
                )
                advance(1)
        return EnsembleClassifier("bagging", members, classes_t, self.config())


class StackingTrainer(_EnsembleBase):
    """Out-of-fold probabilities of ``bases`` -> a logistic-regression meta-learner."""

    def __init__(self, bases: Sequence[Any], folds: int = 5, meta_c: float = 1.0) -> None:
        if len(bases) < 2:
            raise ConfigError(
                f"ensemble.rungs: stacking needs >= 2 models, found {len(bases)}",
                'e.g. rungs = ["tfidf-lr", "embed-lr"].',
            )
        if folds < 2:
            raise ConfigError(f"ensemble.folds: expected >= 2, found {folds}", "use 5.")
        self.bases = list(bases)
        self.folds = int(folds)
        self.meta_c = float(meta_c)
        self.name = "stack:" + "+".join(b.name for b in self.bases)

    def config(self) -> Mapping[str, Any]:
        return {
            "ensemble": {
                "kind": "stacking",
                "bases": [b.name for b in self.bases],
                "folds": self.folds,
                "meta_c": self.meta_c,
            },
            "bases": {b.name: dict(b.config()) for b in self.bases},
        }

    def train(
        self,
        texts: Sequence[str],
        labels: Sequence[str],
        *,
        classes: Sequence[str],
        seed: int,
        progress: Progress = SILENT,
    ) -> EnsembleClassifier:
        from sklearn.linear_model import LogisticRegression

        texts, labels, classes_t, present = check_training_input(texts, labels, classes)
        counts = np.unique(np.asarray(labels), return_counts=True)[1]
        k = int(min(self.folds, counts.min()))
        c = len(classes_t)
        oof = np.zeros((len(texts), len(self.bases), c))
        with progress.task("stacking", total=(k + 1) * len(self.bases)) as advance:
            if k >= 2:
                fold = stratified_folds(labels, k, seed)
                for f in range(k):
                    test, train = np.flatnonzero(fold == f), np.flatnonzero(fold != f)
                    tr_labels = [labels[i] for i in train]
                    for b, base in enumerate(self.bases):
                        if len(set(tr_labels)) < 2:
                            advance(1)
                            continue
                        model = base.train(
                            [texts[i] for i in train], tr_labels, classes=classes_t, seed=seed
                        )
                        oof[test, b] = model.predict_proba([texts[i] for i in test])
                        advance(1)
            members = []
            for base in self.bases:
                members.append(base.train(texts, labels, classes=classes_t, seed=seed))
                advance(1)
        if k < 2:  # too few labels per class for folds: average the bases
            return EnsembleClassifier("bagging", members, classes_t, self.config())
        y = np.asarray([classes_t.index(v) for v in labels])
        lr = LogisticRegression(C=self.meta_c, max_iter=1000)
        lr.fit(oof.reshape(len(texts), -1), y)
        coef, intercept = _full_head(lr, c)
        return EnsembleClassifier("stacking", members, classes_t, self.config(), (coef, intercept))


def _full_head(lr: Any, c: int) -> tuple[np.ndarray, np.ndarray]:
    """The meta-learner's weights over all ``c`` classes (classes without an example get a
    very low intercept), ``(1, d)`` for a binary problem with both classes."""
    seen = [int(k) for k in lr.classes_]
    coef = np.asarray(lr.coef_, dtype=np.float64)
    intercept = np.asarray(lr.intercept_, dtype=np.float64)
    if c == 2 and len(seen) == 2:
        return coef, intercept
    if len(seen) == 2:  # binary fit inside a multi-class problem: expand to softmax rows
        coef = np.vstack([-coef[0] / 2, coef[0] / 2])
        intercept = np.asarray([-intercept[0] / 2, intercept[0] / 2])
    full_coef = np.zeros((c, coef.shape[1]))
    full_int = np.full(c, -1e9)
    for row, k in enumerate(seen):
        full_coef[k] = coef[row]
        full_int[k] = intercept[row]
    return full_coef, full_int
