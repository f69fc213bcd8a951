"""``ladder``: small models first. At every training, each enabled rung is scored on the labels
and the cheapest rung that is not clearly beaten is trained on all of them.

Rungs, cheapest first (cost of training and, above all, of scoring a large pool):

1. ``tfidf-lr`` — word 1-2-gram tf-idf + logistic regression (no encoder at all);
2. ``embed-lr`` — frozen MiniLM embeddings (cached) + logistic regression;
3. ``setfit`` — contrastive tuning of the encoder + logistic regression (a time budget per
   training, ~50 s on 2 CPU cores): only when listed in ``rungs`` and there are at least
   ``setfit_min_labels`` labels;
4. ``finetune`` — the whole encoder fine-tuned (about 100x slower on CPU): only when listed in
   ``rungs`` and there are at least ``finetune_min_labels`` labels.

Scoring: the light rungs by the same repeated stratified k-fold CV (:mod:`.tuning`; same folds
for every rung, one shared time budget); the heavy rungs (``setfit``, ``finetune``) on one
stratified held-out split, and only when the estimated time fits ``finetune_budget_s``
(otherwise skipped, the reason recorded). Their ``std`` is the binomial standard error
``sqrt(p (1 - p) / n_holdout)``.

The rule: walk up the rungs in order of cost, keeping the cheapest as the incumbent. A more
expensive rung replaces the incumbent only when its mean accuracy exceeds the incumbent's by
more than a margin; equal scores keep the cheaper rung. ``margin`` picks the bar:

- ``"std"`` (default): the costlier rung's own CV std (population std over folds) — a high bar,
  the costlier model must win by more than the fold-to-fold noise;
- ``"paired-se"``: the standard error of the per-fold differences (both rungs are scored on the
  same folds, so the noise they share cancels) — wins that hold fold after fold are enough;
- ``"none"``: any gain in mean accuracy.

The heavy rungs have no folds: their bar is their binomial standard error whatever ``margin`` is.
Without any score (a class with one example, or the budget ran out before one full round)
``default_rung`` is trained and the record says why.

Saved as ``ladder.json`` (the chosen rung, the record) + ``model/`` (the rung's own format), so
``load`` restores whichever rung was chosen.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from connectors.models._common import (
    atomic_directory,
    check_positive,
    check_training_input,
    read_json,
    short_hash,
    verified,
    write_json,
)
from connectors.models.embed_lr import EmbedLRTrainer
from connectors.models.tfidf import TfidfLRTrainer, TfidfSpec
from connectors.models.tuning import (
    EMBED_CS,
    MAX_SPLITS,
    MIN_FOLDS,
    TFIDF_CS,
    CandidateScore,
    CVPlan,
    CVRun,
    Family,
    best_candidate,
    cross_validate,
    embed_lr_family,
    plan_cv,
    tfidf_lr_family,
)
from loop.errors import ConfigError, ModelError
from loop.progress import SILENT, Progress

FORMAT = "alloop.ladder/1"
META_FILE = "ladder.json"
MODEL_DIR = "model"
RUNGS: tuple[str, ...] = ("tfidf-lr", "embed-lr", "setfit", "finetune")  # cheapest first
LIGHT_RUNGS: tuple[str, ...] = ("tfidf-lr", "embed-lr")  # scored by k-fold CV
HEAVY_RUNGS: tuple[str, ...] = ("setfit", "finetune")  # scored on one held-out split
MARGINS: dict[str, str] = {
    "std": "its own CV std",
    "paired-se": "the standard error of the per-fold differences",
    "none": "zero",
}


def rule(margin: str) -> str:
    """The ladder's rule in words, for the record."""
    return (
        "cheapest first; a costlier rung is chosen only if its mean accuracy beats the "
        f"incumbent's by more than {MARGINS[margin]}; ties keep the cheaper rung"
    )


# measured: 27 s per epoch over 1,000 short texts (MiniLM, batch 16, 2 CPU cores)
FINETUNE_SECONDS_PER_TEXT_EPOCH = 0.03
# measured: 0.8-1.2 s per contrastive step (16 pairs, 64 tokens, MiniLM, 2 CPU cores)
SETFIT_SECONDS_PER_STEP = 1.0


class _Precomputed:
    """An embedder that answers for the texts just embedded without embedding them again, and
    delegates anything else (so the final fit reuses the vectors the CV used)."""

    def __init__(self, inner: Any, texts: list[str], vectors: np.ndarray):
        self.inner, self._texts, self._vectors = inner, texts, vectors

    @property
    def fingerprint(self) -> str:
        return str(self.inner.fingerprint)

    def config(self) -> Mapping[str, Any]:
        return self.inner.config() if hasattr(self.inner, "config") else {}

    def embed(self, texts: Sequence[str], progress: Progress = SILENT) -> np.ndarray:
        if list(texts) == self._texts:
            return self._vectors
        return self.inner.embed(texts, progress=progress)


class LadderClassifier:
    """The chosen rung's classifier with the ladder's record in ``info``:
    ``{"ladder": [{rung, cv_accuracy, std, seconds, chosen, why, ...}], "chosen": rung, ...}``."""

    def __init__(self, inner: Any, rung: str, info: Mapping[str, Any]):
        if rung not in RUNGS:
            raise ModelError(
                f"expected a ladder rung among {list(RUNGS)}, found {rung!r}.",
                "the saved model is damaged: retrain.",
            )
        self.inner = inner
        self.rung = rung
        self.info = dict(info)
        self._version = short_hash(FORMAT, rung, inner.version)

    @property
    def classes(self) -> tuple[str, ...]:
        return tuple(self.inner.classes)

    @property
    def version(self) -> str:
        """12 hex digits over the rung and the rung classifier's own version."""
        return self._version

    def predict_proba(self, texts: Sequence[str], progress: Progress = SILENT) -> np.ndarray:
        """``(len(texts), len(classes))`` float64, rows sum to 1 (the chosen rung's)."""
        return self.inner.predict_proba(texts, progress=progress)

    def save(self, path: Path) -> None:
        """``ladder.json`` (rung, versions, record) + ``model/`` saved by the rung."""
        with atomic_directory(Path(path)) as tmp:
            self.inner.save(tmp / MODEL_DIR)
            write_json(
                tmp / META_FILE,
                {
                    "format": FORMAT,
                    "trainer": LadderTrainer.name,
                    "rung": self.rung,
                    "version": self._version,
                    "inner_version": self.inner.version,
                    "info": self.info,
                },
            )


class LadderTrainer:
    """Scores the enabled rungs, picks one by the rule above, trains it on all labels.

    ``tfidf`` and ``embed_lr`` are the light rungs' trainers (their C is the CV candidate, or
    the default of the grid when ``tune``); ``finetune`` builds the finetune trainer when first
    needed. ``tune`` also chooses C (and tf-idf's n-gram range) inside each light rung by the
    same CV; the rung's score is then its best candidate's (slightly optimistic, equally so for
    both light rungs).
    """

    name = "ladder"

    def __init__(
        self,
        *,
        tfidf: TfidfLRTrainer,
        embed_lr: EmbedLRTrainer,
        finetune: Callable[[], Any] | None = None,
        setfit: Callable[[], Any] | None = None,
        rungs: Sequence[str] = LIGHT_RUNGS,
        tune: bool = False,
        cv_budget_s: float = 60.0,
        max_splits: int = MAX_SPLITS,
        min_folds: int = MIN_FOLDS,
        finetune_min_labels: int = 200,
        finetune_budget_s: float = 900.0,
        finetune_holdout: float = 0.2,
        finetune_seconds_per_text_epoch: float = FINETUNE_SECONDS_PER_TEXT_EPOCH,
        setfit_min_labels: int = 40,
        default_rung: str = "embed-lr",
        margin: str = "std",
    ):
        rungs = tuple(dict.fromkeys(rungs))
        unknown = [r for r in rungs if r not in RUNGS]
        if not rungs or unknown:
            raise ConfigError(
                f"expected ladder rungs among {list(RUNGS)}, found {list(rungs)}.",
                "list one or more of: tfidf-lr, embed-lr, setfit, finetune.",
            )
        for rung, make in (("finetune", finetune), ("setfit", setfit)):
            if rung in rungs and make is None:
                raise ConfigError(
                    f"expected a {rung} trainer for the {rung} rung, found none.",
                    f"pass {rung}=..., or leave {rung} out of the rungs.",
                )
        if setfit_min_labels < 2:
            raise ConfigError(
                f"expected setfit_min_labels >= 2, found {setfit_min_labels}.", "use e.g. 40."
            )
        if default_rung not in rungs:
            raise ConfigError(
                f"expected default_rung among the enabled rungs {list(rungs)}, found "
                f"{default_rung!r}.",
                f"set default_rung to one of {', '.join(rungs)}.",
            )
        if margin not in MARGINS:
            raise ConfigError(
                f"expected margin among {list(MARGINS)}, found {margin!r}.",
                f"set margin to one of: {', '.join(MARGINS)}.",
            )
        check_positive(
            cv_budget_s=cv_budget_s,
            finetune_budget_s=finetune_budget_s,
            finetune_seconds_per_text_epoch=finetune_seconds_per_text_epoch,
        )
        if not 0 < finetune_holdout < 0.5:
            raise ConfigError(
                f"expected 0 < finetune_holdout < 0.5, found {finetune_holdout}.",
                "use e.g. 0.2.",
            )
        # ordered by cost, whatever order they were given in
        self.rungs = tuple(r for r in RUNGS if r in rungs)
        self.tfidf = tfidf
        self.embed_lr = embed_lr
        self.embedder = embed_lr.embedder
        self._make_finetune = finetune
        self._finetune: Any = None
        self._make_setfit = setfit
        self._setfit: Any = None
        self.setfit_min_labels = int(setfit_min_labels)
        self.tune = bool(tune)
        self.cv_budget_s = float(cv_budget_s)
        self.max_splits = int(max_splits)
        self.min_folds = int(min_folds)
        self.finetune_min_labels = int(finetune_min_labels)
        self.finetune_budget_s = float(finetune_budget_s)
        self.finetune_holdout = float(finetune_holdout)
        self.finetune_seconds_per_text_epoch = float(finetune_seconds_per_text_epoch)
        self.default_rung = default_rung
        self.margin = margin

    def finetune_trainer(self) -> Any:
        if self._finetune is None:
            if self._make_finetune is None:
                raise ModelError(
                    "expected a way to build the finetune trainer, found none.",
                    "build the ladder with connectors.models.make_trainer('ladder', ...).",
                )
            self._finetune = self._make_finetune()
        return self._finetune

    def setfit_trainer(self) -> Any:
        if self._setfit is None:
            if self._make_setfit is None:
                raise ModelError(
                    "expected a way to build the setfit trainer, found none.",
                    "build the ladder with connectors.models.make_trainer('ladder', ...).",
                )
            self._setfit = self._make_setfit()
        return self._setfit

    def _heavy(self, rung: str) -> Any:
        return self.setfit_trainer() if rung == "setfit" else self.finetune_trainer()

    def config(self) -> Mapping[str, Any]:
        out: dict[str, Any] = {
            "trainer": self.name,
            "rungs": list(self.rungs),
            "rule": rule(self.margin),
            "margin": self.margin,
            "tune": self.tune,
            "cv_budget_s": self.cv_budget_s,
            "max_splits": self.max_splits,
            "min_folds": self.min_folds,
            "default_rung": self.default_rung,
            "tfidf-lr": dict(self.tfidf.config()),
            "embed-lr": dict(self.embed_lr.config()),
        }
        if "finetune" in self.rungs:
            out.update(
                finetune_min_labels=self.finetune_min_labels,
                finetune_budget_s=self.finetune_budget_s,
                finetune_holdout=self.finetune_holdout,
                finetune_seconds_per_text_epoch=self.finetune_seconds_per_text_epoch,
            )
            out["finetune"] = dict(self.finetune_trainer().config())
        if "setfit" in self.rungs:
            out["setfit_min_labels"] = self.setfit_min_labels
            out["setfit"] = dict(self.setfit_trainer().config())
            out.setdefault("finetune_budget_s", self.finetune_budget_s)
            out.setdefault("finetune_holdout", self.finetune_holdout)
        return out

    # -- training --------------------------------------------------------------------------
    def train(
        self,
        texts: Sequence[str],
        labels: Sequence[str],
        *,
        classes: Sequence[str],
        seed: int,
        progress: Progress = SILENT,
    ) -> LadderClassifier:
        texts, labels, classes, _ = check_training_input(texts, labels, classes)
        t0 = time.perf_counter()
        records: dict[str, dict[str, Any]] = {
            r: _record(r, why=f"not enabled (rungs: {', '.join(self.rungs)})") for r in RUNGS
        }
        light = [r for r in LIGHT_RUNGS if r in self.rungs]
        plan = plan_cv(labels, seed=seed, max_splits=self.max_splits, min_folds=self.min_folds)
        need_cv = len(self.rungs) > 1 or self.tune
        params: dict[str, dict[str, Any]] = {
            "tfidf-lr": {"ngram_max": self.tfidf.spec.ngram_max, "C": self.tfidf.C},
            "embed-lr": {"C": self.embed_lr.C},
        }
        vectors: np.ndarray | None = None
        run: CVRun | None = None
        if need_cv and plan.usable and light:
            extra: dict[str, float] = {}
            if "embed-lr" in light:
                t = time.perf_counter()
                vectors = self.embedder.embed(texts, progress=progress)
                extra["embed-lr"] = time.perf_counter() - t
            families, rung_of = self._families(texts, vectors, light, seed)
            run = cross_validate(
                families, labels, plan, time_budget_s=self.cv_budget_s, progress=progress
            )
            for rung in light:
                fams = [f.name for f in families if rung_of[f.name] == rung]
                cands = [c for c in run.candidates if c.family in fams]
                seconds = sum(run.family_seconds[f] for f in fams) + extra.get(rung, 0.0)
                best = best_candidate(cands, params[rung])
                rec = records[rung]
                rec.update(seconds=round(seconds, 3), status="not scored")
                if best is None:
                    rec["why"] = (
                        f"not scored: the {self.cv_budget_s:g} s CV budget ran out before one "
                        f"full round of {plan.n_splits} folds"
                    )
                    continue
                params[rung] = {k: best.params[k] for k in params[rung]}
                rec.update(
                    status="scored",
                    cv_accuracy=round(_mean(best), 4),
                    std=round(_std(best), 4),
                    n_folds=len(best.scores),
                    fold_scores=[round(v, 4) for v in best.scores],
                    params=params[rung],
                )
                if self.tune:
                    rec["candidates"] = [c.as_dict() for c in cands]
        else:
            if not light:
                why = "no light rung enabled"
            elif not need_cv:
                why = "the only enabled rung: nothing to compare"
            else:
                why = f"not scored: {plan.reason}"
            for rung in light:
                records[rung].update(status="not scored", why=why)
        for heavy in HEAVY_RUNGS:
            if heavy in self.rungs and need_cv:
                records[heavy] = self._score_heavy(heavy, texts, labels, classes, plan, seed)
            elif heavy in self.rungs:
                records[heavy].update(
                    status="not scored", why="the only enabled rung: nothing to compare"
                )

        chosen = choose_rung(records, self.rungs, self.default_rung, margin=self.margin)
        t1 = time.perf_counter()
        inner = self._train_rung(chosen, texts, labels, classes, seed, params, vectors, progress)
        records[chosen]["train_seconds"] = round(time.perf_counter() - t1, 3)
        info = {
            **dict(getattr(inner, "info", {}) or {}),
            "ladder": [records[r] for r in RUNGS],
            "chosen": chosen,
            "chosen_params": params.get(chosen, {}),
            "rule": rule(self.margin),
            "cv": run.as_dict() if run is not None else plan.as_dict(),
            "ladder_seconds": round(time.perf_counter() - t0, 3),
        }
        return LadderClassifier(inner, chosen, info)

    def _families(
        self, texts: list[str], vectors: np.ndarray | None, light: list[str], seed: int
    ) -> tuple[list[Family], dict[str, str]]:
        families: list[Family] = []
        rung_of: dict[str, str] = {}
        if "tfidf-lr" in light:
            spec = self.tfidf.spec
            ngrams = list(dict.fromkeys([spec.ngram_max, 1, 2])) if self.tune else [spec.ngram_max]
            cs = _grid(TFIDF_CS, self.tfidf.C) if self.tune else [self.tfidf.C]
            for m in ngrams:
                fam = tfidf_lr_family(
                    texts,
                    TfidfSpec(ngram_max=m, min_df=spec.min_df, max_features=spec.max_features),
                    Cs=cs,
                    max_iter=self.tfidf.max_iter,
                    seed=seed,
                )
                families.append(fam)
                rung_of[fam.name] = "tfidf-lr"
        if "embed-lr" in light:
            assert vectors is not None  # embedded above whenever embed-lr is a light rung
            cs = _grid(EMBED_CS, self.embed_lr.C) if self.tune else [self.embed_lr.C]
            fam = embed_lr_family(vectors, Cs=cs, max_iter=self.embed_lr.max_iter, seed=seed)
            families.append(fam)
            rung_of[fam.name] = "embed-lr"
        return families, rung_of

    def _score_heavy(
        self,
        rung: str,
        texts: list[str],
        labels: list[str],
        classes: tuple[str, ...],
        plan: CVPlan,
        seed: int,
    ) -> dict[str, Any]:
        """Score a heavy rung (``setfit`` or ``finetune``) on one stratified held-out split."""
        rec = _record(rung, why="", status="skipped")
        n = len(texts)
        floor, floor_name = (
            (self.setfit_min_labels, "setfit_min_labels")
            if rung == "setfit"
            else (self.finetune_min_labels, "finetune_min_labels")
        )
        if n < floor:
            rec["why"] = f"skipped: {n} labels < {floor_name} {floor}"
            return rec
        if not plan.usable:
            rec["why"] = f"skipped: no stratified held-out split ({plan.reason})"
            return rec
        trainer = self._heavy(rung)
        n_hold = max(int(round(self.finetune_holdout * n)), len(set(labels)))
        if rung == "setfit":  # its own time budget caps the tuning; the head is seconds
            steps = int(trainer.planned_steps(n - n_hold))
            estimate = min(float(trainer.time_budget_s), steps * SETFIT_SECONDS_PER_STEP)
            detail = f"{steps} steps, time budget {trainer.time_budget_s:g} s"
        else:
            epochs = int(getattr(trainer, "epochs", 1))
            min_steps = int(getattr(trainer, "min_steps", 0) or 0)
            if min_steps:  # small sets get more epochs (see FinetuneTrainer.min_steps)
                per_epoch = math.ceil((n - n_hold) / int(getattr(trainer, "batch_size", 16)))
                epochs = max(epochs, math.ceil(min_steps / max(1, per_epoch)))
            estimate = (n - n_hold) * epochs * self.finetune_seconds_per_text_epoch
            detail = f"{n - n_hold} texts x {epochs} epochs"
        rec["estimated_seconds"] = round(estimate, 1)
        if estimate > self.finetune_budget_s:
            rec["why"] = (
                f"skipped: held-out run estimated at {estimate:.0f} s ({detail}) > "
                f"finetune_budget_s {self.finetune_budget_s:g}"
            )
            return rec
        from sklearn.model_selection import StratifiedShuffleSplit

        split = StratifiedShuffleSplit(n_splits=1, test_size=n_hold, random_state=seed % 2**32)
        train_idx, hold_idx = next(split.split(np.zeros(n), np.asarray(labels, dtype=object)))
        t = time.perf_counter()
        clf = trainer.train(
            [texts[i] for i in train_idx],
            [labels[i] for i in train_idx],
            classes=classes,
            seed=seed,
        )
        proba = clf.predict_proba([texts[i] for i in hold_idx])
        pred = np.asarray(clf.classes, dtype=object)[np.argmax(proba, axis=1)]
        p = float(np.mean(pred == np.asarray([labels[i] for i in hold_idx], dtype=object)))
        rec.update(
            status="scored",
            cv_accuracy=round(p, 4),
            std=round(math.sqrt(p * (1 - p) / len(hold_idx)), 4),
            n_folds=1,
            n_holdout=int(len(hold_idx)),
            seconds=round(time.perf_counter() - t, 3),
        )
        return rec

    def _train_rung(
        self,
        rung: str,
        texts: list[str],
        labels: list[str],
        classes: tuple[str, ...],
        seed: int,
        params: Mapping[str, Mapping[str, Any]],
        vectors: np.ndarray | None,
        progress: Progress,
    ) -> Any:
        if rung == "tfidf-lr":
            p = params["tfidf-lr"]
            tfidf = TfidfLRTrainer(
                C=float(p["C"]),
                ngram_max=int(p["ngram_max"]),
                min_df=self.tfidf.spec.min_df,
                max_features=self.tfidf.spec.max_features,
                max_iter=self.tfidf.max_iter,
            )
            return tfidf.train(texts, labels, classes=classes, seed=seed, progress=progress)
        if rung == "embed-lr":
            embedder = (
                self.embedder if vectors is None else _Precomputed(self.embedder, texts, vectors)
            )
            embed_lr = EmbedLRTrainer(
                embedder, C=float(params["embed-lr"]["C"]), max_iter=self.embed_lr.max_iter
            )
            clf = embed_lr.train(texts, labels, classes=classes, seed=seed, progress=progress)
            clf.embedder = self.embedder  # predictions go through the real (cached) embedder
            return clf
        return self._heavy(rung).train(texts, labels, classes=classes, seed=seed, progress=progress)

    # -- loading -------------------------------------------------------------------------
    def load(self, path: Path) -> LadderClassifier:
        """Restore a classifier saved by :meth:`LadderClassifier.save`, whichever rung it is."""
        path = Path(path)
        meta = read_json(path / META_FILE, "ladder classifier")
        if meta.get("format") != FORMAT:
            raise ModelError(
                f"expected an {FORMAT} model in {path}, found format {meta.get('format')!r}.",
                "load it with the trainer that saved it (see the model version's trainer).",
            )
        rung = meta.get("rung")
        inner: Any
        if rung == "tfidf-lr":
            inner = TfidfLRTrainer().load(path / MODEL_DIR)
        elif rung == "embed-lr":
            inner = self.embed_lr.load(path / MODEL_DIR)
        elif rung in HEAVY_RUNGS:
            inner = self._heavy(rung).load(path / MODEL_DIR)
        else:
            raise ModelError(
                f"expected the rung of {path} among {list(RUNGS)}, found {rung!r}.",
                "the saved model is damaged: retrain or restore it from a backup.",
            )
        if inner.version != meta.get("inner_version"):
            raise ModelError(
                f"expected the {rung} model in {path / MODEL_DIR} to have version "
                f"{meta.get('inner_version')}, found {inner.version}.",
                "retrain or restore the model folder from a backup.",
            )
        clf = LadderClassifier(inner, rung, meta.get("info", {}))
        return verified(clf, meta, path)


def choose_rung(
    records: Mapping[str, dict[str, Any]], order: Sequence[str], default: str, margin: str = "std"
) -> str:
    """Apply the ladder's rule to ``records`` (rung -> record with ``status``, ``cv_accuracy``,
    ``std``, ``why`` and, for CV rungs, ``fold_scores``) over ``order`` (cheapest first); sets
    ``chosen`` and ``why`` on the records and returns the chosen rung. ``default`` is chosen
    when no rung was scored."""
    if margin not in MARGINS:
        raise ConfigError(
            f"expected margin among {list(MARGINS)}, found {margin!r}.",
            f"use one of: {', '.join(MARGINS)}.",
        )
    scored = [r for r in order if records[r]["status"] == "scored"]
    if not scored:
        records[default]["chosen"] = True
        records[default]["why"] = (
            f"{records[default]['why']}; chosen as the default rung (nothing was scored)"
        )
        return default
    best = scored[0]
    records[best]["why"] = "cheapest scored rung"
    for rung in scored[1:]:
        inc, rec = records[best], records[rung]
        gain = rec["cv_accuracy"] - inc["cv_accuracy"]
        bar, name = _bar(inc, rec, margin)
        if gain > bar:
            rec["why"] = f"beats {best} by {gain:+.4f} > {name} {bar:.4f}"
            inc["why"] += f"; beaten by {rung}"
            best = rung
        else:
            rec["why"] = (
                f"{gain:+.4f} vs {best} is not more than {name} {bar:.4f}: "
                f"the cheaper {best} is kept"
            )
    records[best]["chosen"] = True
    records[best]["why"] += " -> chosen"
    return best


def _bar(
    incumbent: Mapping[str, Any], challenger: Mapping[str, Any], margin: str
) -> tuple[float, str]:
    """The gain ``challenger`` must exceed, and its name for the record."""
    a, b = challenger.get("fold_scores"), incumbent.get("fold_scores")
    if margin == "std" or not a or not b or len(a) != len(b):
        return float(challenger["std"]), "its std"
    if margin == "paired-se":
        diff = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
        return float(np.std(diff) / math.sqrt(len(diff))), "the paired standard error"
    return 0.0, "zero"


def _record(rung: str, *, why: str, status: str = "disabled") -> dict[str, Any]:
    return {
        "rung": rung,
        "status": status,
        "cv_accuracy": None,
        "std": None,
        "n_folds": 0,
        "seconds": 0.0,
        "chosen": False,
        "why": why,
    }


def _mean(c: CandidateScore) -> float:
    return float(np.mean(c.scores))


def _std(c: CandidateScore) -> float:
    return float(np.std(c.scores))


def _grid(grid: Sequence[float], default: float) -> list[float]:
    return list(dict.fromkeys([*(float(c) for c in grid), float(default)]))
