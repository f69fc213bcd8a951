"""A trainer that wraps another (augmentation, input template): the inner trainer's name,
loading and extra attributes (its embedder, ...) show through; the wrapper changes what it
needs to and adds its own part of the recorded config (``config_part``)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from loop.contracts import Classifier, Trainer


class WrappedTrainer:
    config_key = ""

    def __init__(self, inner: Trainer) -> None:
        self.inner = inner
        self.name = inner.name

    def __getattr__(self, name: str) -> Any:
        if name == "inner":  # not set yet (e.g. while copying): no recursion
            raise AttributeError(name)
        return getattr(self.inner, name)

    def load(self, path: Path) -> Classifier:
        return self.inner.load(path)

    def config_part(self) -> Any:
        raise NotImplementedError

    def config(self) -> Mapping[str, Any]:
        return {**dict(self.inner.config()), self.config_key: self.config_part()}
