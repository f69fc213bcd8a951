"""Choosing the settings of linear heads (C, the tf-idf n-gram range) by cross-validation.

Repeated stratified k-fold (Kohavi 1995; repeats as in Bouckaert & Frank 2004): ``k = min(5,
smallest class count)`` and ``ceil(min_folds / k)`` repeats, so 20 labels still give >= 10 folds
and a fold's training part always holds every class. Seeded: the same labels and seed give the
same folds, hence the same scores, whenever the time budget is not reached.

The time budget is checked before every feature computation and every fit; only complete
repeats count (every candidate is scored on the same folds), so a run overshoots the budget by
at most one fit. When the budget ends before one full repeat, or a class has fewer than 2
examples, the default settings are kept and the result says why.

Candidates that share features form a :class:`Family` (the features of a fold are computed once
and every C is fitted on them): embeddings are computed once for all folds (never re-embedded),
tf-idf is refitted inside each fold (vocabulary and idf from the training part only).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from connectors.models.tfidf import (
    SOLVER,
    TfidfFeatures,
    TfidfSpec,
    fit_linear_head,
    smoothed_idf,
    weigh_counts,
)
from loop.errors import ModelError
from loop.progress import SILENT, Progress

EMBED_CS: tuple[float, ...] = (0.3, 1.0, 3.0, 10.0, 30.0)
TFIDF_CS: tuple[float, ...] = (1.0, 3.0, 10.0, 30.0, 100.0)
MAX_SPLITS = 5
MIN_FOLDS = 10
# up to this many training rows (and fewer rows than terms), tf-idf folds are fitted in the
# row space (see row_space_features): 3-15x faster fits, the same decisions
ROW_SPACE_MAX_ROWS = 1000

Folds = list[tuple[np.ndarray, np.ndarray]]


# -- the plan ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CVPlan:
    """``n_repeats`` rounds of stratified ``n_splits``-fold CV; ``reason`` says why CV cannot
    run (then ``n_splits`` is 0)."""

    n_splits: int
    n_repeats: int
    seed: int
    n_labels: int
    reason: str | None = None

    @property
    def usable(self) -> bool:
        return self.reason is None

    @property
    def n_folds(self) -> int:
        return self.n_splits * self.n_repeats

    def folds(self, labels: Sequence[str]) -> list[Folds]:
        """Per repeat, ``n_splits`` ``(train_idx, test_idx)`` pairs of sorted int64 indices."""
        if not self.usable:
            raise ModelError(
                f"expected a usable cross-validation plan, found none ({self.reason}).",
                "check CVPlan.usable before asking for folds.",
            )
        from sklearn.model_selection import RepeatedStratifiedKFold

        y = np.asarray(labels, dtype=object)
        splitter = RepeatedStratifiedKFold(
            n_splits=self.n_splits, n_repeats=self.n_repeats, random_state=self.seed % 2**32
        )
        pairs = [
            (np.sort(tr).astype(np.int64), np.sort(te).astype(np.int64))
            for tr, te in splitter.split(np.zeros(len(y)), y)
        ]
        return [pairs[r * self.n_splits : (r + 1) * self.n_splits] for r in range(self.n_repeats)]

    def as_dict(self) -> dict[str, Any]:
        return {
            "k": self.n_splits,
            "repeats": self.n_repeats,
            "seed": self.seed,
            "n_labels": self.n_labels,
            "reason": self.reason,
        }


def plan_cv(
    labels: Sequence[str], *, seed: int, max_splits: int = MAX_SPLITS, min_folds: int = MIN_FOLDS
) -> CVPlan:
    """``k = min(max_splits, smallest class count)``, ``repeats = ceil(min_folds / k)``.

    Not usable (``reason`` set) with fewer than 2 distinct labels or a class with fewer than 2
    examples: stratified folds need every class in every training part and test part."""
    if max_splits < 2 or min_folds < 1:
        raise ModelError(
            f"expected max_splits >= 2 and min_folds >= 1, found {max_splits} and {min_folds}.",
            "use e.g. max_splits=5, min_folds=10.",
        )
    values, counts = np.unique(np.asarray(labels, dtype=str), return_counts=True)
    n = len(labels)
    if len(values) < 2:
        return CVPlan(0, 0, seed, n, f"{len(values)} distinct label(s): nothing to compare")
    smallest = int(counts.min())
    if smallest < 2:
        few = sorted(str(v) for v, c in zip(values, counts, strict=True) if c < 2)
        return CVPlan(
            0,
            0,
            seed,
            n,
            f"class(es) {few[:5]} have 1 example; stratified CV needs >= 2 per class",
        )
    k = min(max_splits, smallest)
    return CVPlan(k, math.ceil(min_folds / k), seed, n)


# -- running candidates -------------------------------------------------------------------------


@dataclass(frozen=True)
class Family:
    """Candidates that share the features of a fold.

    ``features(train_idx, test_idx) -> (x_train, x_test)``; ``score(x_train, y_train, x_test,
    y_test, config) -> accuracy`` fits one candidate (``config``, e.g. ``{"C": 1.0}``) and
    scores it. ``params`` are the settings common to the family (e.g. ``{"ngram_max": 2}``).
    """

    name: str
    configs: Sequence[Mapping[str, Any]]
    features: Callable[[np.ndarray, np.ndarray], tuple[Any, Any]]
    score: Callable[[Any, np.ndarray, Any, np.ndarray, Mapping[str, Any]], float]
    params: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class CandidateScore:
    """Fold accuracies of one candidate; ``mean``/``std`` (population std over folds, as
    scikit-learn's ``std_test_score``) are None when no complete repeat was scored."""

    family: str
    params: Mapping[str, Any]
    scores: tuple[float, ...]

    @property
    def mean(self) -> float | None:
        return float(np.mean(self.scores)) if self.scores else None

    @property
    def std(self) -> float | None:
        return float(np.std(self.scores)) if self.scores else None

    def as_dict(self) -> dict[str, Any]:
        return {
            "family": self.family,
            "params": dict(self.params),
            "cv_accuracy": None if self.mean is None else round(self.mean, 4),
            "std": None if self.std is None else round(self.std, 4),
            "n_folds": len(self.scores),
        }


@dataclass(frozen=True)
class CVRun:
    """What :func:`cross_validate` did: every candidate's fold scores, the repeats completed,
    the seconds spent per family (including a repeat cut short by the budget)."""

    plan: CVPlan
    candidates: tuple[CandidateScore, ...]
    repeats_done: int
    seconds: float
    family_seconds: Mapping[str, float]
    budget_s: float | None
    budget_hit: bool

    @property
    def folds_run(self) -> int:
        return self.repeats_done * self.plan.n_splits

    def of(self, family: str) -> list[CandidateScore]:
        return [c for c in self.candidates if c.family == family]

    def as_dict(self) -> dict[str, Any]:
        return {
            **self.plan.as_dict(),
            "repeats_done": self.repeats_done,
            "folds_run": self.folds_run,
            "seconds": round(self.seconds, 3),
            "budget_s": self.budget_s,
            "budget_hit": self.budget_hit,
        }


def cross_validate(
    families: Sequence[Family],
    labels: Sequence[str],
    plan: CVPlan,
    *,
    time_budget_s: float | None,
    progress: Progress = SILENT,
    clock: Callable[[], float] = time.perf_counter,
) -> CVRun:
    """Score every candidate of every family on the same folds, repeat by repeat, until the
    plan is done or ``time_budget_s`` is spent (None: no limit). Only complete repeats count.
    ``clock`` is the time source (seconds)."""
    if time_budget_s is not None and not time_budget_s > 0:
        raise ModelError(
            f"expected a time budget > 0 seconds (or None), found {time_budget_s!r}.",
            "set the cross-validation budget to a positive number of seconds.",
        )
    start = clock()
    deadline = math.inf if time_budget_s is None else start + time_budget_s
    names = [f.name for f in families]
    if len(set(names)) != len(names):
        raise ModelError(
            f"expected distinct family names, found {names}.", "name each family once."
        )
    kept: dict[tuple[str, int], list[float]] = {
        (f.name, i): [] for f in families for i in range(len(f.configs))
    }
    spent = {f.name: 0.0 for f in families}
    y = np.asarray(labels, dtype=object)
    repeats_done, budget_hit = 0, False
    total = plan.n_folds * len(families) if plan.usable else 0
    with progress.task("cross-validation", total=total) as advance:
        done = 0
        for repeat in plan.folds(labels) if plan.usable else []:
            round_scores: dict[tuple[str, int], list[float]] = {key: [] for key in kept}
            for fam in families:
                for train_idx, test_idx in repeat:
                    if clock() > deadline:
                        budget_hit = True
                        break
                    t0 = clock()
                    x_train, x_test = fam.features(train_idx, test_idx)
                    for i, config in enumerate(fam.configs):
                        if clock() > deadline:
                            budget_hit = True
                            break
                        acc = fam.score(x_train, y[train_idx], x_test, y[test_idx], config)
                        round_scores[(fam.name, i)].append(float(acc))
                    spent[fam.name] += clock() - t0
                    if budget_hit:
                        break
                    advance(1)
                    done += 1
                if budget_hit:
                    break
            if budget_hit:
                break
            for key, scores in round_scores.items():
                kept[key].extend(scores)
            repeats_done += 1
        advance(total - done)  # folds the budget left out count as finished (skipped)
    candidates = tuple(
        CandidateScore(
            family=f.name, params={**f.params, **dict(c)}, scores=tuple(kept[(f.name, i)])
        )
        for f in families
        for i, c in enumerate(f.configs)
    )
    return CVRun(
        plan=plan,
        candidates=candidates,
        repeats_done=repeats_done,
        seconds=clock() - start,
        family_seconds=spent,
        budget_s=time_budget_s,
        budget_hit=budget_hit,
    )


# -- families of linear heads ---------------------------------------------------------------------


def _accuracy(head_classes: Sequence[str], proba: np.ndarray, y: np.ndarray) -> float:
    pred = np.asarray(head_classes, dtype=object)[np.argmax(proba, axis=1)]
    return float(np.mean(pred == y))


def embed_lr_family(
    embeddings: np.ndarray,
    *,
    Cs: Sequence[float] = EMBED_CS,
    max_iter: int = 1000,
    seed: int = 0,
    name: str = "embed-lr",
) -> Family:
    """LogisticRegression(C) (lbfgs, as ``embed-lr`` trains) on precomputed ``(n, dim)``
    embeddings: each fold takes rows, nothing is re-embedded."""
    x = np.asarray(embeddings, dtype=np.float64)
    if x.ndim != 2:
        raise ModelError(
            f"expected embeddings of shape (n, dim), found {x.shape}.",
            "pass the output of an embedder's embed(texts).",
        )

    def features(train_idx: np.ndarray, test_idx: np.ndarray) -> tuple[Any, Any]:
        return x[train_idx], x[test_idx]

    def score(xt: Any, yt: np.ndarray, xv: Any, yv: np.ndarray, cfg: Mapping[str, Any]) -> float:
        head = fit_linear_head(xt, list(yt), C=float(cfg["C"]), max_iter=max_iter, seed=seed)
        return _accuracy(head.classes, head.proba(xv), yv)

    return Family(name, [{"C": float(c)} for c in Cs], features, score)


def row_space_features(x_train: Any, x_test: Any) -> tuple[np.ndarray, np.ndarray]:
    """``(n, d)`` and ``(m, d)`` (dense or sparse, ``n < d``) → ``(n, r)`` and ``(m, r)``
    dense, ``r <= n``, with the same inner products with the training rows.

    With ``X = U S Q^T`` (``K = X X^T = U S^2 U^T``): ``F = X Q = U S`` and ``F_test = X_test Q =
    X_test X^T U S^-1``. An L2-penalised linear model with an unpenalised intercept has its
    weights in the row space of ``X`` (representer theorem, Kimeldorf & Wahba 1971), and ``Q``
    is orthonormal, so logistic regression fitted on ``F`` has the same optimum as on ``X``
    (predictions equal up to the solver's tolerance) at ``r`` instead of ``d`` dimensions."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1):
        gram = _dense(x_train @ x_train.T)
        lam, u = np.linalg.eigh(gram)
        keep = lam > max(float(lam.max()), 0.0) * 1e-10
        if not keep.any():  # every training row is zero: nothing to learn from
            return np.zeros((gram.shape[0], 1)), np.zeros((x_test.shape[0], 1))
        lam, u = lam[keep], u[:, keep]
        root = np.sqrt(lam)
        return u * root, (_dense(x_test @ x_train.T) @ u) / root


def _dense(x: Any) -> np.ndarray:
    return np.asarray(x.toarray() if hasattr(x, "toarray") else x, dtype=np.float64)


def tfidf_lr_family(
    texts: Sequence[str],
    spec: TfidfSpec,
    *,
    Cs: Sequence[float] = TFIDF_CS,
    max_iter: int = 1000,
    seed: int = 0,
    name: str | None = None,
) -> Family:
    """tf-idf (vocabulary and idf fitted on each fold's training part) + LogisticRegression(C)
    with the solver ``tfidf-lr`` trains with. The texts are counted once; a fold keeps the
    terms of its training part and their idf there, which is exactly what a vectoriser fitted
    on that part gives (a per-fold refit only when ``max_features`` is set). Up to
    ``ROW_SPACE_MAX_ROWS`` training rows the head is fitted on :func:`row_space_features`."""
    texts = list(texts)
    counts: list[Any] = []  # every text counted once (on first use) for all folds

    def features(train_idx: np.ndarray, test_idx: np.ndarray) -> tuple[Any, Any]:
        if spec.max_features is not None:  # frequency limits: refit a vectoriser per fold
            feats, x_train = TfidfFeatures.fit_transform(spec, [texts[i] for i in train_idx])
            return x_train, feats.transform([texts[i] for i in test_idx])
        if not counts:
            try:
                counts.append(spec.counter().fit_transform(texts).tocsr())
            except ValueError as exc:  # "empty vocabulary"
                raise ModelError(
                    f"expected texts with words of 2+ letters for tf-idf, found none ({exc}).",
                    "check that the texts are not empty or numbers only.",
                ) from exc
        # what a vectoriser fitted on the training part gives: its terms (sorted, as the
        # global vocabulary is), their document frequency and idf there
        c_train = counts[0][train_idx]
        df = np.bincount(c_train.indices, minlength=c_train.shape[1])
        cols = np.flatnonzero(df >= max(spec.min_df, 1))
        idf = smoothed_idf(df[cols], len(train_idx))
        x_train = weigh_counts(c_train[:, cols], idf, sublinear_tf=spec.sublinear_tf)
        x_test = weigh_counts(counts[0][test_idx][:, cols], idf, sublinear_tf=spec.sublinear_tf)
        if x_train.shape[0] <= ROW_SPACE_MAX_ROWS and x_train.shape[0] < x_train.shape[1]:
            return row_space_features(x_train, x_test)
        return x_train, x_test

    def score(xt: Any, yt: np.ndarray, xv: Any, yv: np.ndarray, cfg: Mapping[str, Any]) -> float:
        head = fit_linear_head(
            xt, list(yt), C=float(cfg["C"]), max_iter=max_iter, seed=seed, solver=SOLVER
        )
        return _accuracy(head.classes, head.proba(xv), yv)

    return Family(
        name or f"tfidf-lr ngram 1-{spec.ngram_max}",
        [{"C": float(c)} for c in Cs],
        features,
        score,
        params={"ngram_max": spec.ngram_max},
    )


# -- choosing ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TuningResult:
    """The chosen settings, why, and the CV score of every candidate."""

    chosen: Mapping[str, Any]
    default: Mapping[str, Any]
    fallback: bool  # True: CV could not choose, the default was kept
    reason: str
    cv: CVRun

    @property
    def seconds(self) -> float:
        return self.cv.seconds

    @property
    def best(self) -> CandidateScore | None:
        """The chosen candidate's scores (None when the default was kept without scores)."""
        for c in self.cv.candidates:
            if dict(c.params) == dict(self.chosen) and c.scores:
                return c
        return None

    def as_dict(self) -> dict[str, Any]:
        return {
            "chosen": dict(self.chosen),
            "default": dict(self.default),
            "fallback": self.fallback,
            "reason": self.reason,
            "cv": self.cv.as_dict(),
            "candidates": [c.as_dict() for c in self.cv.candidates],
            "seconds": round(self.seconds, 3),
        }


def best_candidate(
    candidates: Sequence[CandidateScore], default: Mapping[str, Any]
) -> CandidateScore | None:
    """The scored candidate with the highest mean CV accuracy; ties go to the one whose params
    match ``default``, then to the earlier one. None when nothing was scored."""
    scored = [(i, c) for i, c in enumerate(candidates) if c.scores]
    if not scored:
        return None
    default = dict(default)

    def key(ic: tuple[int, CandidateScore]) -> tuple[float, int, int]:
        i, c = ic
        same = all(c.params.get(k) == v for k, v in default.items())
        return (-float(np.mean(c.scores)), 0 if same else 1, i)

    return min(scored, key=key)[1]


def choose(run: CVRun, default: Mapping[str, Any]) -> TuningResult:
    """The candidate with the highest mean CV accuracy; ties go to ``default``, then to the
    earlier candidate. The default is kept when no candidate has a complete repeat."""
    default = dict(default)
    if not run.plan.usable:
        return TuningResult(default, default, True, f"kept the default: {run.plan.reason}", run)
    best = best_candidate(run.candidates, default)
    if best is None:
        why = (
            f"kept the default: the time budget of {run.budget_s:g} s ran out before one full "
            f"round of {run.plan.n_splits} folds (raise the budget)"
        )
        return TuningResult(default, default, True, why, run)
    mean, std = float(np.mean(best.scores)), float(np.std(best.scores))
    why = (
        f"highest mean CV accuracy {mean:.4f} ± {std:.4f} over {len(best.scores)} "
        f"folds ({run.plan.n_splits}-fold x {run.repeats_done})"
    )
    if run.budget_hit:
        why += f"; the {run.budget_s:g} s budget stopped it after {run.repeats_done} of {run.plan.n_repeats} repeats"
    chosen = dict(best.params)
    return TuningResult(chosen, default, False, why, run)


def tune_embed_lr(
    embeddings: np.ndarray,
    labels: Sequence[str],
    *,
    seed: int,
    Cs: Sequence[float] = EMBED_CS,
    default_C: float = 1.0,
    max_iter: int = 1000,
    time_budget_s: float | None = 30.0,
    max_splits: int = MAX_SPLITS,
    min_folds: int = MIN_FOLDS,
    progress: Progress = SILENT,
) -> TuningResult:
    """Choose C of the ``embed-lr`` head on ``embeddings`` ``(n, dim)`` (one row per label).
    ``default_C`` is always a candidate and wins ties. Returns ``chosen = {"C": ...}``."""
    labels = list(labels)
    if len(embeddings) != len(labels):
        raise ModelError(
            f"expected one embedding per label, found {len(embeddings)} and {len(labels)}.",
            "embed exactly the labeled texts.",
        )
    grid = _with_default(Cs, default_C)
    plan = plan_cv(labels, seed=seed, max_splits=max_splits, min_folds=min_folds)
    family = embed_lr_family(embeddings, Cs=grid, max_iter=max_iter, seed=seed)
    run = cross_validate([family], labels, plan, time_budget_s=time_budget_s, progress=progress)
    return choose(run, {"C": float(default_C)})


def tune_tfidf_lr(
    texts: Sequence[str],
    labels: Sequence[str],
    *,
    seed: int,
    Cs: Sequence[float] = TFIDF_CS,
    ngram_maxes: Sequence[int] = (1, 2),
    default_C: float = 10.0,
    default_ngram_max: int = 2,
    min_df: int = 1,
    max_features: int | None = None,
    max_iter: int = 1000,
    time_budget_s: float | None = 30.0,
    max_splits: int = MAX_SPLITS,
    min_folds: int = MIN_FOLDS,
    progress: Progress = SILENT,
) -> TuningResult:
    """Choose C and the n-gram range ``(1, ngram_max)`` of ``tfidf-lr``. The default pair is
    always a candidate and wins ties. Returns ``chosen = {"ngram_max": ..., "C": ...}``."""
    texts, labels = list(texts), list(labels)
    if len(texts) != len(labels):
        raise ModelError(
            f"expected one label per text, found {len(texts)} texts and {len(labels)} labels.",
            "pass texts and labels of the same length.",
        )
    grid = _with_default(Cs, default_C)
    ngrams = list(dict.fromkeys([*ngram_maxes, default_ngram_max]))
    plan = plan_cv(labels, seed=seed, max_splits=max_splits, min_folds=min_folds)
    families = [
        tfidf_lr_family(
            texts,
            TfidfSpec(ngram_max=int(m), min_df=min_df, max_features=max_features),
            Cs=grid,
            max_iter=max_iter,
            seed=seed,
        )
        for m in ngrams
    ]
    run = cross_validate(families, labels, plan, time_budget_s=time_budget_s, progress=progress)
    return choose(run, {"ngram_max": int(default_ngram_max), "C": float(default_C)})


def _with_default(Cs: Sequence[float], default_C: float) -> list[float]:
    grid = [float(c) for c in Cs]
    if not grid or any(not c > 0 for c in grid) or not default_C > 0:
        raise ModelError(
            f"expected a non-empty list of C > 0 and a default C > 0, found {list(Cs)} and "
            f"{default_C!r}.",
            "use e.g. Cs=(0.3, 1, 3, 10, 30).",
        )
    return list(dict.fromkeys([*grid, float(default_C)]))
