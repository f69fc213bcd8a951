"""``embed-lr``: frozen (cached) sentence embeddings + a scikit-learn LogisticRegression head.

Fast enough to retrain every iteration: the encoder never changes, so each text is embedded once
(see :mod:`connectors.models.cache`) and a refit on 1,000 × 384 takes a fraction of a second.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from connectors.models._common import (
    atomic_directory,
    check_positive,
    check_texts,
    check_training_input,
    expand_columns,
    read_json,
    short_hash,
    verified,
    write_json,
)
from connectors.models.linear import fit_linear_head, linear_proba
from loop.errors import ModelError
from loop.progress import SILENT, Progress

FORMAT = "alloop.embed-lr/1"
META_FILE = "embed_lr.json"
HEAD_FILE = "head.npz"


def _head_version(
    classes: Sequence[str],
    model_classes: Sequence[str],
    coef: np.ndarray,
    intercept: np.ndarray,
    embedder_fingerprint: str,
) -> str:
    return short_hash(
        FORMAT,
        "\0".join(classes),
        "\0".join(model_classes),
        np.ascontiguousarray(coef, dtype="<f8").tobytes(),
        np.ascontiguousarray(intercept, dtype="<f8").tobytes(),
        embedder_fingerprint,
    )


class EmbedLRClassifier:
    """A linear head over frozen embeddings.

    ``coef`` is ``(1, dim)`` for two classes with examples (logistic) or ``(k, dim)`` for
    ``k > 2`` (multinomial softmax), over ``model_classes`` (the classes that had examples).
    """

    def __init__(
        self,
        *,
        classes: Sequence[str],
        model_classes: Sequence[str],
        coef: np.ndarray,
        intercept: np.ndarray,
        embedder: Any,
        config: Mapping[str, Any],
        info: Mapping[str, Any],
    ):
        self._classes = tuple(classes)
        self.model_classes = tuple(model_classes)
        self.coef = np.asarray(coef, dtype=np.float64)
        self.intercept = np.asarray(intercept, dtype=np.float64)
        self.embedder = embedder
        self.embedder_fingerprint: str = embedder.fingerprint
        self.config = dict(config)
        self.info = dict(info)
        self._version = _head_version(
            self._classes, self.model_classes, self.coef, self.intercept, self.embedder_fingerprint
        )

    @property
    def classes(self) -> tuple[str, ...]:
        return self._classes

    @property
    def version(self) -> str:
        """12 hex digits over the head's parameters, classes and encoder fingerprint."""
        return self._version

    def predict_proba_embeddings(self, embeddings: np.ndarray) -> np.ndarray:
        """``(n, dim)`` embeddings → ``(n, len(classes))`` float64, rows sum to 1."""
        x = np.asarray(embeddings)
        if x.ndim != 2 or x.shape[1] != self.coef.shape[1]:
            raise ModelError(
                f"expected embeddings of shape (n, {self.coef.shape[1]}), found {x.shape}.",
                "embed the texts with the encoder this head was trained on.",
            )
        p = linear_proba(x, self.coef, self.intercept)
        return expand_columns(p, self.model_classes, self._classes)

    def predict_proba(self, texts: Sequence[str], progress: Progress = SILENT) -> np.ndarray:
        """``(len(texts), len(classes))`` float64, rows sum to 1, columns in ``classes`` order;
        classes without a training example get 0."""
        texts = check_texts(texts)
        if not texts:
            return np.zeros((0, len(self._classes)), dtype=np.float64)
        return self.predict_proba_embeddings(self.embedder.embed(texts, progress=progress))

    def save(self, path: Path) -> None:
        """``head.npz`` (coef, intercept, model_classes; no pickle) + ``embed_lr.json``."""
        with atomic_directory(Path(path)) as tmp:
            np.savez(
                tmp / HEAD_FILE,
                coef=self.coef,
                intercept=self.intercept,
                model_classes=np.array(self.model_classes, dtype=np.str_),
            )
            write_json(
                tmp / META_FILE,
                {
                    "format": FORMAT,
                    "trainer": EmbedLRTrainer.name,
                    "classes": list(self._classes),
                    "model_classes": list(self.model_classes),
                    "embedder_fingerprint": self.embedder_fingerprint,
                    "version": self._version,
                    "config": self.config,
                    "info": self.info,
                },
            )


class EmbedLRTrainer:
    """Trains :class:`EmbedLRClassifier`: embed (through ``embedder``, ideally a
    :class:`~connectors.models.cache.CachedEmbedder`), then fit ``LogisticRegression(C, max_iter)``
    with ``random_state=seed``."""

    name = "embed-lr"

    def __init__(self, embedder: Any, *, C: float = 1.0, max_iter: int = 1000):
        check_positive(C=C, max_iter=max_iter)
        if not isinstance(getattr(embedder, "fingerprint", None), str):
            raise ModelError(
                f"expected an embedder with a fingerprint, found {type(embedder).__name__}.",
                "use connectors.models.make_embedder(...) or MiniLMEmbedder.",
            )
        self.embedder = embedder
        self.C = float(C)
        self.max_iter = int(max_iter)

    def config(self) -> Mapping[str, Any]:
        embedder = dict(self.embedder.config()) if hasattr(self.embedder, "config") else {}
        embedder.pop("cache", None)
        return {
            "trainer": self.name,
            "C": self.C,
            "max_iter": self.max_iter,
            "embedder": embedder,
            "embedder_fingerprint": self.embedder.fingerprint,
        }

    def train(
        self,
        texts: Sequence[str],
        labels: Sequence[str],
        *,
        classes: Sequence[str],
        seed: int,
        progress: Progress = SILENT,
    ) -> EmbedLRClassifier:
        texts, labels, classes, present = check_training_input(texts, labels, classes)
        t0 = time.perf_counter()
        x = self.embedder.embed(texts, progress=progress)
        t1 = time.perf_counter()
        with progress.task("fitting", total=1) as advance:
            coef, intercept, model_classes, n_iter, converged = self._fit(x, labels, seed)
            advance(1)
        if tuple(model_classes) != tuple(sorted(present)):
            raise ModelError(
                f"expected the head to learn classes {sorted(present)}, found {model_classes}.",
                "report this: scikit-learn returned unexpected classes.",
            )
        info = {
            "n_train": len(texts),
            "class_counts": dict(Counter(labels)),
            "n_iter": n_iter,
            "converged": converged,
            "embed_seconds": round(t1 - t0, 3),
            "fit_seconds": round(time.perf_counter() - t1, 3),
            "seed": seed,
        }
        clf = EmbedLRClassifier(
            classes=classes,
            model_classes=model_classes,
            coef=coef,
            intercept=intercept,
            embedder=self.embedder,
            config=self.config(),
            info=info,
        )
        pred = np.array(classes)[np.argmax(clf.predict_proba_embeddings(x), axis=1)]
        clf.info["train_accuracy"] = round(float(np.mean(pred == np.array(labels))), 4)
        return clf

    def _fit(
        self, x: np.ndarray, labels: list[str], seed: int
    ) -> tuple[np.ndarray, np.ndarray, list[str], int, bool]:
        head = fit_linear_head(
            np.asarray(x, dtype=np.float64), labels, C=self.C, max_iter=self.max_iter, seed=seed
        )
        return head.coef, head.intercept, list(head.classes), head.n_iter, head.converged

    def load(self, path: Path) -> EmbedLRClassifier:
        """Rebuild a classifier saved by :meth:`EmbedLRClassifier.save`. Refuses a head trained
        on another encoder (fingerprint mismatch) or whose files were altered."""
        path = Path(path)
        meta = read_json(path / META_FILE, "embed-lr classifier")
        if meta.get("format") != FORMAT:
            raise ModelError(
                f"expected an {FORMAT} model in {path}, found format {meta.get('format')!r}.",
                "load it with the trainer that saved it (see the model version's trainer).",
            )
        if meta["embedder_fingerprint"] != self.embedder.fingerprint:
            raise ModelError(
                f"expected a head trained on the current encoder (fingerprint "
                f"{self.embedder.fingerprint[:12]}), found one trained on "
                f"{str(meta['embedder_fingerprint'])[:12]} in {path}.",
                "retrain (alloop iterate --train), or set model_path/max_length back to the "
                "encoder settings it was trained with.",
            )
        try:
            with np.load(path / HEAD_FILE, allow_pickle=False) as head:
                coef, intercept = head["coef"], head["intercept"]
                model_classes = [str(c) for c in head["model_classes"]]
        except (OSError, ValueError, KeyError) as exc:
            raise ModelError(
                f"expected {HEAD_FILE} with coef, intercept, model_classes in {path}, found an "
                f"unreadable file ({exc}).",
                "the saved model is damaged: retrain or restore it from a backup.",
            ) from exc
        clf = EmbedLRClassifier(
            classes=meta["classes"],
            model_classes=model_classes,
            coef=coef,
            intercept=intercept,
            embedder=self.embedder,
            config=meta.get("config", {}),
            info=meta.get("info", {}),
        )
        return verified(clf, meta, path)
