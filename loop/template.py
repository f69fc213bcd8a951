"""The text the model sees: ``input.template`` (default ``"{text}"``, the text as it is).

A template holds ``{text}`` once and may add words around it: a task prefix (``"Movie review:
{text}"``), the label names spelled out (``"{text} (positive or negative?)"``). Fields of a
multi-column row are joined at ingest (``alloop ingest --text-col title,body``), so the item's
text already holds them. :class:`TemplateTrainer` applies the template to every text the model
trains on or scores (training, the pool, the test split, the eval sample alike) and saves it
with the model (``input.json``), so a version always scores the way it was trained.
"""

from __future__ import annotations

import json
import string
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from loop.contracts import Classifier, SamplingClassifier, Trainer
from loop.errors import ConfigError
from loop.progress import SILENT, Progress
from loop.wrapped import WrappedTrainer

PLAIN = "{text}"
SIDE_FILE = "input.json"


def check_template(template: str) -> str:
    """``template`` if it holds ``{text}`` exactly once and no other field, else ConfigError."""
    try:
        fields = [f for _, f, _, _ in string.Formatter().parse(template) if f is not None]
    except ValueError as exc:
        raise ConfigError(
            f"input.template: expected a format string, found {template!r} ({exc})",
            'write literal braces as {{ and }}, e.g. "Review: {text}".',
        ) from None
    if fields != ["text"]:
        raise ConfigError(
            f"input.template: expected the one field {{text}}, found {fields or 'none'} in "
            f"{template!r}",
            'e.g. "Movie review: {text}" (join columns at ingest with --text-col a,b).',
        )
    return template


class TemplatedClassifier:
    """``inner`` scoring ``template.format(text=t)`` for each text ``t``."""

    def __init__(self, inner: Classifier, template: str) -> None:
        self.inner = inner
        self.template = template
        if isinstance(inner, SamplingClassifier):  # keep the capability only where it is
            sampler = inner

            def predict_proba_samples(
                texts: Sequence[str], n_samples: int, seed: int, progress: Progress = SILENT
            ) -> np.ndarray:
                return sampler.predict_proba_samples(self._fmt(texts), n_samples, seed, progress)

            self.predict_proba_samples = predict_proba_samples

    def __getattr__(self, name: str) -> Any:
        if name in ("inner", "predict_proba_samples"):  # the latter only as set in __init__
            raise AttributeError(name)
        return getattr(self.inner, name)

    @property
    def classes(self) -> tuple[str, ...]:
        return self.inner.classes

    @property
    def version(self) -> str:
        return self.inner.version

    def _fmt(self, texts: Sequence[str]) -> list[str]:
        return [self.template.format(text=t) for t in texts]

    def predict_proba(self, texts: Sequence[str], progress: Progress = SILENT) -> np.ndarray:
        return self.inner.predict_proba(self._fmt(texts), progress)

    def save(self, path: Path) -> None:
        self.inner.save(path)
        (Path(path) / SIDE_FILE).write_text(
            json.dumps({"template": self.template}) + "\n", encoding="utf-8"
        )


class TemplateTrainer(WrappedTrainer):
    """Trains ``inner`` on templated texts; its classifiers score templated texts."""

    config_key = "input_template"

    def __init__(self, inner: Trainer, template: str) -> None:
        super().__init__(inner)
        self.template = check_template(template)

    def train(
        self,
        texts: Sequence[str],
        labels: Sequence[str],
        *,
        classes: Sequence[str],
        seed: int,
        progress: Progress = SILENT,
    ) -> Classifier:
        formatted = [self.template.format(text=t) for t in texts]
        model = self.inner.train(formatted, labels, classes=classes, seed=seed, progress=progress)
        return TemplatedClassifier(model, self.template)

    def load(self, path: Path) -> Classifier:
        """The saved model with the template it was trained with (none: plain)."""
        model = self.inner.load(path)
        side = Path(path) / SIDE_FILE
        if not side.is_file():
            return model
        template = str(json.loads(side.read_text(encoding="utf-8"))["template"])
        return TemplatedClassifier(model, template)

    def config_part(self) -> str:
        return self.template
