"""Name -> strategy registry, so settings and the command line can pick a strategy by name.

Contract v2 (see :mod:`strategies.batch`): every strategy declares ``needs`` (a subset of
:data:`strategies.batch.INPUTS`) and is run through :meth:`Strategy.choose` with a
:class:`~strategies.batch.SelectionInputs` holding those inputs. It either scores items
(``score``; the seeded :func:`~strategies.selection.top_k` picks) or selects the whole batch
(``select``; for diversity). The v1 measures over ``proba`` alone keep their call form
``strategy(proba, rng) -> scores``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Protocol

import numpy as np

from strategies import batch, measures
from strategies.batch import INPUTS, SelectionInputs
from strategies.errors import StrategyInputError
from strategies.selection import top_k

Scorer = Callable[[SelectionInputs, np.random.Generator | None], np.ndarray]
Selector = Callable[
    [SelectionInputs, int, np.random.Generator], tuple[np.ndarray, np.ndarray | None]
]


class Measure(Protocol):
    def __call__(self, proba: np.ndarray, rng: np.random.Generator | None, /) -> np.ndarray:
        """``(n_items, n_classes)`` probabilities -> ``(n_items,)`` float64, higher = ask first."""
        ...


@dataclass(frozen=True)
class Strategy:
    """A named strategy. ``fn(proba, rng) -> scores`` for the measures over ``proba``;
    ``score(inputs, rng) -> scores`` or ``select(inputs, k, rng) -> (indices, scores | None)``
    for the others. ``needs`` lists its inputs; ``paper`` where it comes from."""

    name: str
    fn: Measure | None
    summary: str
    needs: frozenset[str] = field(default_factory=lambda: frozenset({"proba"}))
    stochastic: bool = False  # True when the choice depends on rng beyond tie-breaking
    paper: str = ""
    score: Scorer | None = None
    select: Selector | None = None

    def __post_init__(self) -> None:
        unknown = self.needs - INPUTS
        if unknown or sum(x is not None for x in (self.fn, self.score, self.select)) != 1:
            raise ValueError(f"strategy {self.name!r}: bad definition ({sorted(unknown)})")

    @property
    def batch(self) -> bool:
        """Whether it selects a whole batch (its scores may be None)."""
        return self.select is not None

    def __call__(self, proba: np.ndarray, rng: np.random.Generator | None = None) -> np.ndarray:
        """Scores of the pool from ``proba`` alone (v1 measures and proba-only scorers)."""
        if self.fn is not None:
            return self.fn(proba, rng)
        if self.score is not None and self.needs == {"proba"}:
            return self.score(SelectionInputs(proba=proba), rng)
        raise StrategyInputError(
            f"strategy {self.name!r}",
            expected="a strategy that scores from probabilities alone",
            found=f"one that needs {sorted(self.needs)}"
            + (" and selects a batch" if self.batch else ""),
            fix="call choose(inputs, k, rng) with those inputs",
        )

    def scores(
        self, inputs: SelectionInputs, rng: np.random.Generator | None = None
    ) -> np.ndarray | None:
        """Per-item scores (higher = more wanted), or None for a batch strategy."""
        if self.fn is not None:
            if "proba" not in self.needs:  # a measure of the pool's size alone (random)
                return self.fn(np.full((inputs.n, 2), 0.5), rng)
            return self.fn(inputs.need("proba", self.name), rng)
        if self.score is not None:
            return self.score(inputs, rng)
        return None

    def choose(
        self, inputs: SelectionInputs, k: int, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """``(indices (min(k, n),) in the order to ask, scores (n,) | None)``."""
        if self.select is not None:
            idx, scores = self.select(inputs, k, rng)
            return np.asarray(idx, dtype=np.intp), scores
        scores = self.scores(inputs, rng)
        assert scores is not None
        return top_k(scores, k, rng), scores


def _build() -> Mapping[str, Strategy]:
    P, E, L, S = "proba", "embeddings", "labeled_embeddings", "proba_samples"
    entries = (
        # needs nothing: the loop does not score the pool for it (a tuned encoder would have to
        # embed the whole pool again for scores nobody reads)
        Strategy(
            "random",
            measures.random,
            "uniform random scores (baseline)",
            needs=frozenset(),
            stochastic=True,
        ),
        Strategy(
            "least-confidence",
            measures.least_confidence,
            "1 - max p",
            paper="Lewis & Gale 1994",
        ),
        Strategy("margin", measures.margin, "1 - (p1 - p2)", paper="Scheffer et al. 2001"),
        Strategy(
            "entropy", measures.entropy, "Shannon entropy of p", paper="Settles & Craven 2008"
        ),
        Strategy(
            "bald",
            None,
            "mutual information of prediction and model over a committee",
            needs=frozenset({S}),
            paper="Houlsby et al. 2011; Gal et al. 2017",
            score=batch.bald,
        ),
        Strategy(
            "vote-entropy",
            None,
            "entropy of the committee's votes",
            needs=frozenset({S}),
            paper="Dagan & Engelson 1995",
            score=batch.vote_entropy,
        ),
        Strategy(
            "kl-consensus",
            None,
            "mean KL of the members from the consensus",
            needs=frozenset({S}),
            paper="McCallum & Nigam 1998",
            score=batch.kl_consensus,
        ),
        Strategy(
            "density-margin",
            None,
            "margin x similarity to the pool (information density)",
            needs=frozenset({P, E}),
            paper="Settles & Craven 2008",
            score=batch.density_margin,
        ),
        Strategy(
            "contrastive",
            None,
            "KL of the prediction from its labeled neighbours' (CAL)",
            needs=frozenset({P, E, L, "labeled_proba"}),
            paper="Margatina et al. 2021",
            select=batch.contrastive,
        ),
        Strategy(
            "power-margin",
            None,
            "k drawn with probability ~ margin (stochastic batch)",
            needs=frozenset({P}),
            stochastic=True,
            paper="Kirsch et al. 2023",
            select=batch.power_margin,
        ),
        Strategy(
            "cluster-margin",
            None,
            "most uncertain of each k-means cluster of the top 10k",
            needs=frozenset({P, E}),
            paper="Citovsky et al. 2021",
            select=batch.cluster_margin,
        ),
        Strategy(
            "badge",
            None,
            "k-means++ over the head's gradient embeddings",
            needs=frozenset({P, E}),
            stochastic=True,
            paper="Ash et al. 2020",
            select=batch.badge,
        ),
        Strategy(
            "coreset",
            None,
            "greedy k-centre from the labeled set",
            needs=frozenset({E, L}),
            paper="Sener & Savarese 2018",
            select=batch.coreset,
        ),
        Strategy(
            "class-balanced-margin",
            None,
            "margin, batch split toward rarely labeled predicted classes",
            needs=frozenset({P, "labels"}),
            paper="Schroeder et al. 2023 (small-text ClassBalancer)",
            select=batch.class_balanced_margin,
        ),
        Strategy(
            "balanced-cluster-margin",
            None,
            "cluster-margin within each class-balanced quota",
            needs=frozenset({P, E, "labels"}),
            paper="Citovsky et al. 2021 + small-text ClassBalancer",
            select=batch.balanced_cluster_margin,
        ),
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


#: Cold-start selectors over the pool's embeddings: ``(embeddings, k, rng) -> indices``.
COLD_STARTS: Mapping[str, str] = MappingProxyType(
    {
        "random": "uniform random items",
        "diverse": "the item nearest each k-means centroid (Nguyen & Smeulders 2004)",
        "typiclust": "the most typical item of each k-means cluster (Hacohen et al. 2022)",
    }
)


def get_measure(name: str) -> Strategy:
    """The registered strategy called ``name`` (``least_confidence`` == ``least-confidence``)."""
    return MEASURES[canonical_name(name)]
