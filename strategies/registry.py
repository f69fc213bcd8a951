"""Name -> strategy registry, so settings and the command line can pick a measure by name.

Every registered strategy is called the same way: ``strategy(proba, rng) -> scores``
(``rng`` is ignored by deterministic measures). ``needs`` says what a strategy consumes, so
strategies that need embeddings or a committee can be added later without changing callers that
only check ``needs``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Protocol

import numpy as np

from strategies import measures
from strategies.errors import StrategyInputError


class Measure(Protocol):
    def __call__(self, proba: np.ndarray, rng: np.random.Generator | None, /) -> np.ndarray:
        """``(n_items, n_classes)`` probabilities -> ``(n_items,)`` float64, higher = ask first."""
        ...


@dataclass(frozen=True)
class Strategy:
    """A named scoring strategy: ``fn(proba, rng) -> scores``; ``needs`` lists its inputs."""

    name: str
    fn: Measure
    summary: str
    needs: frozenset[str] = field(default_factory=lambda: frozenset({"proba"}))
    stochastic: bool = False  # True when the scores depend on rng (the random baseline)

    def __call__(self, proba: np.ndarray, rng: np.random.Generator | None = None) -> np.ndarray:
        return self.fn(proba, rng)


def _build() -> Mapping[str, Strategy]:
    entries = (
        Strategy("random", measures.random, "uniform random scores (baseline)", stochastic=True),
        Strategy("least-confidence", measures.least_confidence, "1 - max p (Lewis & Gale 1994)"),
        Strategy("margin", measures.margin, "1 - (p1 - p2) (Scheffer et al. 2001)"),
        Strategy("entropy", measures.entropy, "Shannon entropy of p (Settles & Craven 2008)"),
    )
    return MappingProxyType({entry.name: entry for entry in entries})


#: Canonical name -> :class:`Strategy`, read-only.
MEASURES: Mapping[str, Strategy] = _build()


def available() -> tuple[str, ...]:
    """The canonical names, in registry order."""
    return tuple(MEASURES)


def canonical_name(name: str) -> str:
    """``" Least_Confidence "`` -> ``"least-confidence"``; raise for an unknown name."""
    if not isinstance(name, str):
        raise StrategyInputError(
            "strategy name",
            expected=f"a string, one of {', '.join(available())}",
            found=f"{type(name).__name__} {name!r}"[:120],
            fix="pass the strategy's name as text",
        )
    key = name.strip().lower().replace("_", "-")
    if key not in MEASURES:
        raise StrategyInputError(
            "strategy name",
            expected=f"one of {', '.join(available())}",
            found=repr(name),
            fix="use one of the listed names ('_' and '-' are interchangeable)",
        )
    return key


def get_measure(name: str) -> Strategy:
    """The registered strategy called ``name`` (``least_confidence`` == ``least-confidence``)."""
    return MEASURES[canonical_name(name)]
