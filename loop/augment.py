"""Easy data augmentation for text (Wei & Zou, "EDA: easy data augmentation techniques for
boosting performance on text classification tasks", EMNLP 2019): more training examples from
the labels there are.

- ``synonym``: replace ``n`` words (not stop words) by a synonym from the lexicon;
- ``insert``: insert a synonym of a random word at a random place, ``n`` times;
- ``swap``: swap two random words, ``n`` times;
- ``delete``: drop each word with probability ``rate`` (never every word);

with ``n = max(1, round(rate * words))``. :class:`AugmentingTrainer` adds ``copies`` augmented
copies of every training text (copy ``j`` by technique ``j mod len(techniques)``) with the
text's label, and trains the wrapped trainer on originals + copies. Only training sees them:
evaluation, the test split and the eval sample score the model on the texts as they are.
Deterministic: the copies of a text depend only on the seed and the text. Words keep their
case and their attached punctuation; a replaced word takes the synonym in lower case.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from loop.contracts import Classifier, Trainer
from loop.errors import ConfigError
from loop.progress import SILENT, Progress
from loop.wrapped import WrappedTrainer

TECHNIQUES = ("synonym", "insert", "swap", "delete")
_WORD = re.compile(r"^(\W*)([A-Za-z][A-Za-z'-]*)(\W*)$")
# the stop words EDA leaves alone (a short list of English function words)
STOP_WORDS = frozenset(
    """a about above after again against all am an and any are as at be because been before
    being below between both but by can could did do does doing down during each few for from
    further had has have having he her here hers herself him himself his how i if in into is it
    its itself just me more most my myself no nor not now of off on once only or other our ours
    ourselves out over own same she should so some such than that the their theirs them
    themselves then there these they this those through to too under until up very was we were
    what when where which while who whom why will with would you your yours yourself
    yourselves""".split()
)


def _rng(seed: int, text: str, copy: int) -> np.random.Generator:
    digest = hashlib.sha256(f"{seed}\0{copy}\0{text}".encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


class Augmenter:
    """The four EDA operations over a synonym lexicon (word -> synonyms, lower case)."""

    def __init__(
        self,
        techniques: Sequence[str],
        *,
        rate: float = 0.1,
        copies: int = 4,
        synonyms: Mapping[str, Sequence[str]] | None = None,
    ) -> None:
        unknown = [t for t in techniques if t not in TECHNIQUES]
        if unknown or not techniques:
            raise ConfigError(
                f"augment.techniques: expected some of {list(TECHNIQUES)}, found "
                f"{list(techniques)}",
                'e.g. techniques = ["synonym", "swap"].',
            )
        if not 0.0 < rate < 1.0:
            raise ConfigError(f"augment.rate: expected 0 < rate < 1, found {rate}", "use 0.1.")
        if copies < 1:
            raise ConfigError(f"augment.copies: expected >= 1, found {copies}", "use 4.")
        if synonyms is None and {"synonym", "insert"} & set(techniques):
            raise ConfigError(
                "augment: synonym replacement and insertion need a lexicon, none was given",
                "build the augmenter with loop.wiring.make_augmenter (it loads WordNet).",
            )
        self.techniques = tuple(techniques)
        self.rate = float(rate)
        self.copies = int(copies)
        self.synonyms: Mapping[str, Sequence[str]] = synonyms or {}

    def config(self) -> dict[str, Any]:
        return {"techniques": list(self.techniques), "rate": self.rate, "copies": self.copies}

    # -- the operations ----------------------------------------------------------------
    def _synonyms_of(self, word: str) -> list[str]:
        m = _WORD.match(word)
        if m is None or m.group(2).lower() in STOP_WORDS:
            return []
        core = m.group(2).lower()
        return [s for s in self.synonyms.get(core, ()) if s != core]

    def synonym(self, words: list[str], rng: np.random.Generator) -> list[str]:
        n = max(1, round(self.rate * len(words)))
        out = list(words)
        order = rng.permutation(len(words))
        done = 0
        for i in order:
            choices = self._synonyms_of(words[i])
            if not choices:
                continue
            m = _WORD.match(words[i])
            assert m is not None
            out[i] = m.group(1) + choices[int(rng.integers(len(choices)))] + m.group(3)
            done += 1
            if done >= n:
                break
        return out

    def insert(self, words: list[str], rng: np.random.Generator) -> list[str]:
        n = max(1, round(self.rate * len(words)))
        out = list(words)
        candidates = [w for w in words if self._synonyms_of(w)]
        if not candidates:
            return out
        for _ in range(n):
            choices = self._synonyms_of(candidates[int(rng.integers(len(candidates)))])
            out.insert(int(rng.integers(len(out) + 1)), choices[int(rng.integers(len(choices)))])
        return out

    def swap(self, words: list[str], rng: np.random.Generator) -> list[str]:
        out = list(words)
        if len(out) < 2:
            return out
        for _ in range(max(1, round(self.rate * len(words)))):
            i, j = rng.choice(len(out), size=2, replace=False)
            out[i], out[j] = out[j], out[i]
        return out

    def delete(self, words: list[str], rng: np.random.Generator) -> list[str]:
        if len(words) < 2:
            return list(words)
        keep = rng.random(len(words)) >= self.rate
        if not keep.any():
            keep[int(rng.integers(len(words)))] = True
        return [w for w, k in zip(words, keep, strict=True) if k]

    def augment(self, text: str, seed: int) -> list[str]:
        """Up to ``copies`` augmented versions of ``text``, each different from it and from
        the others (an operation that found nothing to change adds nothing)."""
        words = text.split()
        out: list[str] = []
        for j in range(self.copies):
            op = getattr(self, self.techniques[j % len(self.techniques)])
            new = " ".join(op(words, _rng(seed, text, j)))
            if words and new != text and new != " ".join(words) and new not in out:
                out.append(new)
        return out


class AugmentingTrainer(WrappedTrainer):
    """A trainer that trains ``inner`` on every text plus its augmented copies. Everything
    else (name, load, the inner trainer's attributes such as its embedder) is the inner
    trainer's; ``config`` records the augmentation."""

    config_key = "augment"

    def __init__(self, inner: Trainer, augmenter: Augmenter) -> None:
        super().__init__(inner)
        self.augmenter = augmenter

    def train(
        self,
        texts: Sequence[str],
        labels: Sequence[str],
        *,
        classes: Sequence[str],
        seed: int,
        progress: Progress = SILENT,
    ) -> Classifier:
        all_texts, all_labels = list(texts), list(labels)
        for text, label in zip(texts, labels, strict=True):
            copies = self.augmenter.augment(text, seed)
            all_texts += copies
            all_labels += [label] * len(copies)
        return self.inner.train(
            all_texts, all_labels, classes=classes, seed=seed, progress=progress
        )

    def config_part(self) -> dict[str, Any]:
        return self.augmenter.config()
