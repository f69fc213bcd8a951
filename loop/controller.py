"""The loop controller: one iteration at a time, every step persisted, resumable.

One iteration::

    sync labels -> train (when enough label changes, or forced) -> evaluate on held-out
      -> score the pool -> select k -> record the queries -> send them to the labeling tool

The iteration row in the store holds the step reached (``begin`` -> ``trained`` ->
``selected`` -> ``pushed`` -> ``done``). The step's outcome and the step change are written in
one transaction, so a crash between two steps resumes at the next one without redoing or
duplicating: a model trained and recorded is not trained again, a selection recorded is not
redone, and the labeling tool's ``send`` is idempotent on the item id.

This module imports only numpy, ``strategies`` and the project's own contracts: no torch.
"""

from __future__ import annotations

import dataclasses
import json
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

import strategies
from loop.contracts import (
    Classifier,
    Embedder,
    EmbeddingClassifier,
    LabelingTool,
    SamplingClassifier,
    Store,
    Trainer,
)
from loop.errors import ConfigError, ModelError, StrategyError
from loop.forecast import MIN_EVAL_ITEMS
from loop.metrics import accuracy, macro_f1, per_class
from loop.progress import SILENT, Progress
from loop.records import Item, LabelRequest, LabelWriteResult, ModelVersion, Query
from loop.resample import class_bootstrap

STOP_CRITERIA = ("stable-predictions", "low-uncertainty", "plateau", "budget")
STOPPING_DEFAULTS: dict[str, Any] = {
    "kappa": 0.99,  # Bloodgood & Vijay-Shanker 2009
    "window": 3,
    "uncertainty": 0.1,
    "budget": None,
    "stop_set_size": 1000,
}
LOADED_VERSIONS = 3  # classifiers kept in memory: current, the other lane's, the newest
MIN_EVAL_FOR_PROMOTION = MIN_EVAL_ITEMS  # labeled eval items before promotion compares on them
# off: the trainer's settings; nightly: the nightly retrain searches, other retrains reuse the
# last searched configuration (searching when there is none yet); always: every retrain searches
TUNE_MODES = ("off", "nightly", "always")


def _same_start(recorded: Any, now: Any) -> bool:
    """Whether a model version's training config and a trainer's config start from the same
    encoder and checkpoint (fingerprints; a key missing on either side is not compared)."""
    for key in ("base_fingerprint", "checkpoint_fingerprint"):
        if key in recorded and key in now and recorded[key] != now[key]:
            return False
    return True


def _json_eq(stored: Any, now: Any) -> bool:
    """Whether a setting stored with a model version (JSON) equals its value now."""
    return json.dumps(stored, sort_keys=True, default=str) == json.dumps(
        now, sort_keys=True, default=str
    )


def _newer(a: ModelVersion, b: ModelVersion) -> bool:
    """Version ids start with a sequence number (v0001-...), so they order by age."""
    return a.id > b.id


@dataclass
class IterationReport:
    number: int
    trained: bool
    model_version: str | None
    n_labels: int
    metrics: dict[str, Any]
    selected: int
    sent: int
    resumed_from: str | None
    timings: dict[str, float] = field(default_factory=dict)
    stopping: dict[str, Any] | None = None  # the stopping criteria at this iteration


def _utcnow() -> datetime:
    return datetime.now(UTC)


def evaluate(
    classifier: Classifier,
    texts: Sequence[str],
    labels: Sequence[str],
    prefix: str,
    progress: Progress = SILENT,
) -> dict[str, Any]:
    """Accuracy and macro-F1 of ``classifier`` on labeled texts, keys ``<prefix>_accuracy``,
    ``<prefix>_macro_f1``, ``<prefix>_n``, and ``<prefix>_per_class`` (precision, recall, F1,
    support of each class). Empty input gives only ``<prefix>_n = 0``."""
    if not texts:
        return {f"{prefix}_n": 0}
    proba = classifier.predict_proba(list(texts), progress=progress)
    pred = [classifier.classes[i] for i in np.argmax(proba, axis=1)]
    return {
        f"{prefix}_accuracy": accuracy(labels, pred),
        f"{prefix}_macro_f1": macro_f1(labels, pred, classifier.classes),
        f"{prefix}_n": len(texts),
        f"{prefix}_per_class": per_class(labels, pred, classifier.classes),
    }


class Controller:
    """Runs loop iterations over a store, a trainer and a labeling tool.

    ``classes`` fixes the columns of every model. ``strategy`` names a measure in the
    ``strategies`` registry. Randomness (ties, random strategy, cold start) comes from
    ``np.random.default_rng([seed, iteration])``, so a resumed iteration makes the same choices.
    """

    def __init__(
        self,
        store: Store,
        trainer: Trainer,
        tool: LabelingTool,
        *,
        classes: Sequence[str],
        models_dir: Path,
        strategy: str = "margin",
        batch_size: int = 20,
        initial_batch_size: int | None = None,
        min_new_labels: int = 20,
        cold_start: str = "random",
        eval_sample_size: int = 0,
        promotion: str = "always",
        promotion_tolerance: float = 0.0,
        tune: str = "off",
        tune_budget_s: float = 600.0,
        embedder: Embedder | None = None,
        committee_size: int = 5,
        slow_trainer: Trainer | None = None,
        slow_min_new_labels: int = 50,
        stop_when: Sequence[str] = (),
        stopping: dict[str, Any] | None = None,
        seed: int = 0,
        progress: Progress = SILENT,
        clock: Callable[[], datetime] = _utcnow,
        pool_chunk_size: int = 50_000,
        max_candidates: int | None = None,
    ) -> None:
        if pool_chunk_size < 1 or (max_candidates is not None and max_candidates < 1):
            raise ConfigError(
                f"pool.chunk_size and pool.max_candidates must be >= 1, got {pool_chunk_size} "
                f"and {max_candidates}.",
                "use e.g. 50000 and 100000 (or no max_candidates).",
            )
        self.pool_chunk_size = int(pool_chunk_size)
        self.max_candidates = max_candidates
        if len(classes) < 2:
            raise ConfigError(
                f"a classifier needs >= 2 classes, got {list(classes)}.",
                "set `classes` or ingest labeled data first.",
            )
        if cold_start not in strategies.COLD_STARTS:
            raise ConfigError(
                f"cold_start must be one of {list(strategies.COLD_STARTS)}, got {cold_start!r}.",
                "pick one of them.",
            )
        if tune not in TUNE_MODES:
            raise ConfigError(
                f"tune must be one of {list(TUNE_MODES)}, got {tune!r}.", "pick one of them."
            )
        if cold_start != "random" and embedder is None:
            raise ConfigError(
                f"cold_start={cold_start!r} needs an embedder.",
                "pass one, or use cold_start='random'.",
            )
        try:
            self.measure = strategies.get_measure(strategy)  # fails early on an unknown name
        except ValueError as e:
            raise StrategyError(str(e)) from None
        if self.measure.needs & {"embeddings", "labeled_embeddings"} and embedder is None:
            raise ConfigError(
                f"strategy {self.measure.name!r} needs the pool's embeddings, and no embedder "
                "was given.",
                "pass an embedder (the wiring gives the model's encoder), or pick a strategy "
                "over probabilities (margin, entropy, ...).",
            )
        if committee_size < 2:
            raise ConfigError(
                f"committee_size must be >= 2, got {committee_size}.", "use 2 or more (e.g. 5)."
            )
        self.committee_size = committee_size
        if slow_trainer is not None and slow_trainer.name == trainer.name:
            raise ConfigError(
                f"the slow lane's model is the fast lane's ({trainer.name!r}).",
                "set slow_model to a slower, stronger model (e.g. setfit) or leave it empty.",
            )
        if slow_min_new_labels < 1:
            raise ConfigError(
                f"slow_min_new_labels must be >= 1, got {slow_min_new_labels}.", "use e.g. 50."
            )
        self.slow_trainer = slow_trainer
        self.slow_min_new_labels = slow_min_new_labels
        unknown = sorted(set(stop_when) - set(STOP_CRITERIA))
        if unknown:
            raise ConfigError(
                f"stop_when names unknown criteria {unknown}.",
                f"use any of {list(STOP_CRITERIA)}.",
            )
        self.stop_when = tuple(stop_when)
        self.stopping = {**STOPPING_DEFAULTS, **(stopping or {})}
        self.store = store
        self.trainer = trainer
        self.tool = tool
        self.classes = tuple(classes)
        self.models_dir = Path(models_dir)
        self.strategy = self.measure.name  # the canonical spelling
        self.batch_size = batch_size
        self.initial_batch_size = initial_batch_size or batch_size
        self.min_new_labels = min_new_labels
        self.cold_start = cold_start
        self.eval_sample_size = eval_sample_size
        self.promotion = promotion
        self.promotion_tolerance = promotion_tolerance
        self.tune = tune
        self.tune_budget_s = tune_budget_s
        self.embedder = embedder
        self.seed = seed
        self.progress = progress
        self.clock = clock
        self._loaded: dict[str, Classifier] = {}  # version id -> classifier, newest last
        self._load_lock = threading.Lock()
        # the fast and the slow lane record versions and decide promotion one at a time
        self._record_lock = threading.RLock()

    # -- labels in -----------------------------------------------------------------------
    def sync(self) -> LabelWriteResult:
        """Fetch labels changed since the last sync and ingest them idempotently."""
        key = "sync_cursor"
        raw = self.store.get_meta(key)
        since = datetime.fromisoformat(raw) if raw else None
        started = self.clock()
        # the tool re-reads whatever margin its own clock needs (Label Studio's: 5 s)
        snapshot = self.tool.fetch_labels(since)
        if snapshot.as_of is None:  # labels a webhook writes during the fetch must survive it
            snapshot = dataclasses.replace(snapshot, as_of=started)
        result = self.store.sync_labels(snapshot)
        if snapshot.rejections:
            self.store.record_rejections(snapshot.rejections)
        if snapshot.cursor is not None and (since is None or snapshot.cursor > since):
            self.store.set_meta(key, snapshot.cursor.isoformat())
        return result

    # -- models --------------------------------------------------------------------------
    def current_model(self) -> ModelVersion | None:
        """The model the loop uses: the newest *promoted* version (versions recorded before any
        promotion rule existed count as candidates and are used when nothing is promoted)."""
        versions = self.store.model_versions()
        promoted = [mv for mv in versions if mv.status == "promoted"]
        if promoted:
            return promoted[-1]
        candidates = [mv for mv in versions if mv.status == "candidate"]
        return candidates[-1] if candidates else None

    def promote(self, version_id: str) -> ModelVersion:
        """Make ``version_id`` the current model: it becomes promoted and newer promoted
        versions go back to candidate (kept, not current)."""
        target = self.store.get_model_version(version_id)
        if target.status == "rejected" and not Path(target.path).exists():
            raise ModelError(
                f"model version {version_id} has no files at {target.path}.", "retrain instead."
            )
        for mv in self.store.model_versions():
            if mv.status == "promoted" and mv.id != version_id and _newer(mv, target):
                self.store.set_model_status(mv.id, "candidate")
        self.store.set_model_status(version_id, "promoted")
        return self.store.get_model_version(version_id)

    def rollback(self) -> ModelVersion:
        """Reject the current model and return to the promoted version before it."""
        current = self.current_model()
        promoted = [mv for mv in self.store.model_versions() if mv.status == "promoted"]
        if current is None or len(promoted) < 2:
            raise ConfigError(
                f"nothing to roll back to: {len(promoted)} promoted model version(s).",
                "promote a specific version instead (alloop models promote ID).",
            )
        self.store.set_model_status(current.id, "rejected")
        return promoted[-2]

    def _trainer_of(self, mv: ModelVersion) -> Trainer:
        """The trainer that loads ``mv``: the slow lane's for its versions, else the loop's."""
        slow = self.slow_trainer
        return slow if slow is not None and mv.trainer == slow.name else self.trainer

    def load_classifier(self, mv: ModelVersion) -> Classifier:
        """The classifier of ``mv``, loaded once and cached (the last few versions: the two
        lanes compare each other's; thread-safe: the HTTP service's request threads, its worker
        and its slow lane share the controller)."""
        with self._load_lock:
            clf = self._loaded.get(mv.id)
            if clf is None:
                try:
                    clf = self._trainer_of(mv).load(Path(mv.path))
                except FileNotFoundError:
                    raise ModelError(
                        f"model version {mv.id} is recorded at {mv.path} but the files are missing.",
                        "restore the models directory or retrain (alloop iterate --train).",
                    ) from None
                self._remember(mv.id, clf)
            return clf

    def _remember(self, version_id: str, clf: Classifier) -> None:
        """Keep ``clf`` loaded (caller holds ``_load_lock``): the newest three versions."""
        self._loaded.pop(version_id, None)
        self._loaded[version_id] = clf
        while len(self._loaded) > LOADED_VERSIONS:
            self._loaded.pop(next(iter(self._loaded)))

    def needs_training(self, force: bool = False) -> tuple[bool, str]:
        ts = self.store.training_set()
        distinct = len(set(ts.labels))
        if distinct < 2:
            return (
                False,
                f"{len(ts)} labeled items in {distinct} class(es); training needs 2 classes",
            )
        if force:
            return True, "forced"
        current = self.current_model()
        if current is None:
            return True, "no model yet"
        base = current
        # a retrain the promotion rule turned down (e.g. not better than the slow lane's model)
        # counts as trained: labels since it trigger the next one, not the same labels again
        for mv in reversed(self.store.model_versions()):
            if mv.trainer != self.trainer.name:
                continue
            if (
                mv.status == "rejected"
                and not (mv.metrics.get("promotion") or {}).get("promoted", True)
                and mv.label_revision > base.label_revision
            ):
                base = mv
            break
        changes = self.store.label_revision() - base.label_revision
        if changes >= self.min_new_labels:
            return (
                True,
                f"{changes} label changes since {base.id} (threshold {self.min_new_labels})",
            )
        return (
            False,
            f"{changes} label changes since {base.id}, below the threshold {self.min_new_labels}",
        )

    def up_to_date(self) -> tuple[bool, str]:
        """Whether a retrain now would learn nothing new: the current model was trained on the
        store's current labels (same label revision) by this trainer with the same settings.
        Returns ``(fresh, why)``."""
        current = self.current_model()
        if current is None:
            return False, "no model yet"
        changes = self.store.label_revision() - current.label_revision
        if changes:
            return False, f"{changes} label change(s) since {current.id}"
        if current.trainer != self.trainer.name:
            return False, f"{current.id} was trained by {current.trainer}, now {self.trainer.name}"
        now = self.trainer.config()
        changed = sorted(k for k, v in now.items() if not _json_eq(current.config.get(k), v))
        if changed:
            return False, f"settings changed since {current.id}: {', '.join(changed)}"
        return True, f"{current.id} is already trained on these labels with these settings"

    # -- stopping ------------------------------------------------------------------------
    def stopped(self) -> str | None:
        """Why the loop stopped pushing batches (``stop_when``), from the newest iteration
        that evaluated the criteria; None while it goes on. A change of ``stop_when`` counts
        from the next iteration."""
        if not self.stop_when:
            return None
        for it in reversed(self.store.iterations()):
            stopping = it.info.get("stopping")
            if stopping is not None:
                return stopping.get("reason") if stopping.get("stopped") else None
        return None

    def _stop_set(self) -> list[str]:
        """The fixed unlabeled sample every model version is scored on (drawn once from the
        pool, seeded; its items may still be asked for)."""
        size = int(self.stopping["stop_set_size"])
        ids = self.store.get_meta("stop_set")
        if ids is None and size > 0:
            rng = np.random.default_rng([self.seed, 0, 3])
            ids = self._pool_sample(rng, size)
            self.store.set_meta("stop_set", ids)
        return list(ids or [])

    def _score_stop_set(self, clf: Classifier, version: str) -> None:
        ids = self._stop_set()
        if not ids:
            return
        items = self.store.get_items(ids)
        proba = np.asarray(clf.predict_proba([it.text for it in items]), dtype=np.float64)
        self.store.set_meta(
            f"stop_set:{version}",
            {
                "predictions": np.argmax(proba, axis=1).tolist(),
                "uncertainty": float(np.mean(1.0 - proba.max(axis=1))),
            },
        )

    def stopping_status(self) -> dict[str, Any]:
        """Every stopping criterion on the model versions so far (each scored on the stop
        set), whether the loop stops (``stop_when``) and why."""
        from strategies import stopping as st

        cfg = self.stopping
        versions = self.store.model_versions()
        scored = [(mv, self.store.get_meta(f"stop_set:{mv.id}")) for mv in versions]
        scored = [(mv, rec) for mv, rec in scored if rec is not None]
        preds = [np.asarray(rec["predictions"]) for _, rec in scored]
        unc = [float(rec["uncertainty"]) for _, rec in scored]
        n_labels = versions[-1].n_labels if versions else 0
        verdicts = {
            "stable-predictions": st.stabilizing_predictions(
                preds, threshold=float(cfg["kappa"]), window=int(cfg["window"])
            ),
            "low-uncertainty": st.overall_uncertainty(unc, threshold=float(cfg["uncertainty"])),
            "plateau": self._plateau(versions),
            "budget": st.label_budget(
                n_labels, budget=None if cfg["budget"] is None else int(cfg["budget"])
            ),
        }
        fired = [name for name in self.stop_when if verdicts[name].fired]
        return {
            "n_labels": n_labels,
            "models_scored": len(scored),
            "criteria": {name: v.as_dict() for name, v in verdicts.items()},
            "stop_when": list(self.stop_when),
            "stopped": bool(fired),
            "reason": "; ".join(f"{name}: {verdicts[name].detail}" for name in fired) or None,
        }

    def _plateau(self, versions: Sequence[ModelVersion]) -> Any:
        """The learning-curve forecast's plateau verdict over the model versions' held-out
        accuracy (the labeled evaluation sample once it has >= 20 items, else the test split)."""
        from loop.forecast import VERDICT_PLATEAU, forecast, version_points
        from strategies.stopping import Verdict

        _, pts = version_points([(v.n_labels, v.metrics) for v in versions])
        if len({p.n_labels for p in pts}) < 4:
            return Verdict(False, None, None, f"{len(pts)} curve point(s); the forecast needs 4")
        fc = forecast(pts, n_boot=100, seed=self.seed)
        return Verdict(fc.verdict == VERDICT_PLATEAU, fc.plateau_gain, None, fc.reason)

    def _last_tuning(self, trainer: Trainer) -> tuple[str, dict[str, Any]] | None:
        """(version id, params) of the newest model version trained with settings searched
        for the current set-up: the same start model and, for the searched settings, the same
        values in the settings now as then (a changed setting invalidates the old search)."""
        params = getattr(trainer, "params", None)
        now = params() if params is not None else {}
        cfg = trainer.config()
        for mv in reversed(self.store.model_versions()):
            tuning = (mv.config or {}).get("tuning") or {}
            if tuning.get("source") != "searched" or not tuning.get("params"):
                continue
            default = (tuning.get("search") or {}).get("default") or {}
            if _same_start(mv.config, cfg) and all(now.get(k) == v for k, v in default.items()):
                return mv.id, dict(tuning["params"])
            return None  # the newest search was for another set-up: search again
        return None

    def _trainer_for(
        self, texts: list[str], labels: list[str], seed: int, retune: bool
    ) -> tuple[Trainer, dict[str, Any] | None]:
        """The trainer for this training, with the tuned settings (searched now or reused),
        and the record of that decision (None when tuning is off or not supported)."""
        trainer = self.trainer
        tune = getattr(trainer, "tune", None)
        if self.tune == "off" or tune is None:
            return trainer, None
        last = self._last_tuning(trainer)
        if self.tune == "always" or retune or last is None:
            result = tune(
                texts,
                labels,
                classes=self.classes,
                seed=seed,
                budget_s=self.tune_budget_s,
                progress=self.progress,
            )
            if result.get("reason") is None:
                record = {
                    "source": "searched",
                    "mode": self.tune,
                    "params": result["params"],
                    "search": result,
                }
                return trainer.with_params(**result["params"]), record  # type: ignore[attr-defined]
            if last is None:
                return trainer, {"source": "default", "mode": self.tune, "reason": result["reason"]}
            why = f"search not run ({result['reason']}); reused {last[0]}"
        else:
            why = f"reused the configuration searched for {last[0]}"
        record = {
            "source": "reused",
            "mode": self.tune,
            "from": last[0],
            "params": last[1],
            "reason": why,
        }
        return trainer.with_params(**last[1]), record  # type: ignore[attr-defined]

    def train(
        self, iteration: int | None, rule: str | None = None, *, retune: bool = False
    ) -> ModelVersion:
        """Train on the current training set, evaluate on the test and eval splits, decide
        promotion (``rule``: ``always`` or ``not-worse`` than the current model on the same
        held-out data; default the controller's ``promotion``), save and record the model
        version with the decision and its numbers (moving ``iteration`` to step ``trained``).

        Before training: the trainer's domain adaptation (``prepare``) on the training-split
        texts when it has one, and the tuning decision (``retune``: search now, as the nightly
        retrain does). A warm-starting trainer gets the current model's folder."""
        revision = self.store.label_revision()
        ts = self.store.training_set()
        seed = self.seed + (iteration or 0)
        extra: dict[str, Any] = {}
        timing: dict[str, float] = {}
        kwargs: dict[str, Any] = {}
        if getattr(self.trainer, "warm_start", False):
            current = self.current_model()
            if (
                current is not None
                and current.trainer == self.trainer.name
                and Path(current.path).is_dir()
                and _same_start(current.config, self.trainer.config())
            ):
                kwargs["previous"] = Path(current.path)
            extra["warm_start_from"] = current.id if kwargs and current is not None else None
        prepare = getattr(self.trainer, "prepare", None)
        # a warm start does not use the adapted encoder; a trainer that does not adapt needs no texts
        if prepare is not None and getattr(self.trainer, "adapts", True) and not kwargs:
            t = time.perf_counter()
            adapted = prepare([it.text for it in self.store.items("train")], progress=self.progress)
            if adapted is not None:
                extra["adaptation"] = {k: v for k, v in adapted.items() if k != "path"}
                timing["prepare_seconds"] = round(time.perf_counter() - t, 3)
        texts, labels = list(ts.texts), list(ts.labels)
        t = time.perf_counter()
        trainer, tuning = self._trainer_for(texts, labels, seed, retune)
        if tuning is not None:
            extra["tuning"] = tuning
            timing["tune_seconds"] = round(time.perf_counter() - t, 3)
        t0 = time.perf_counter()
        clf = trainer.train(
            texts,
            labels,
            classes=self.classes,
            seed=seed,
            progress=self.progress,
            **kwargs,
        )
        train_s = time.perf_counter() - t0
        return self._record(
            clf,
            trainer,
            iteration=iteration,
            revision=revision,
            n_labels=len(ts),
            rule=rule or self.promotion,
            metrics={"train_seconds": round(train_s, 3), **timing},
            extra={"seed": seed, **extra},
            ties=len(ts.ties),
            agreement=ts.agreement,
        )

    def _record(
        self,
        clf: Classifier,
        trainer: Trainer,
        *,
        iteration: int | None,
        revision: int,
        n_labels: int,
        rule: str,
        metrics: dict[str, Any],
        extra: dict[str, Any],
        ties: int,
        agreement: float | None,
        lane: str = "fast",
    ) -> ModelVersion:
        """Evaluate ``clf`` on the test and eval splits, decide its promotion, save it and record
        it as a model version (the two lanes one at a time: a version number is never taken
        twice and each decision compares with the model current at that moment)."""
        t1 = time.perf_counter()
        for split in ("test", "eval"):
            held = self.store.training_set(split)
            metrics.update(evaluate(clf, held.texts, held.labels, split, self.progress))
        metrics["eval_seconds"] = round(time.perf_counter() - t1, 3)
        if ties:
            metrics["ties_left_out"] = ties
        if agreement is not None:
            metrics["agreement"] = agreement
        with self._record_lock:
            number = len(self.store.model_versions()) + 1
            version_id = f"v{number:04d}-{clf.version[:8]}"
            path = self.models_dir / version_id
            clf.save(path)
            decision = self._promotion(clf, metrics, rule, trainer.name)
            metrics["promotion"] = decision
            config = {
                **trainer.config(),
                **extra,
                "training": dict(getattr(clf, "info", {}) or {}),
            }
            if self.slow_trainer is not None:
                config["lane"] = lane
            mv = ModelVersion(
                id=version_id,
                trainer=trainer.name,
                path=str(path),
                classes=self.classes,
                n_labels=n_labels,
                label_revision=revision,
                metrics=metrics,
                config=config,
                iteration=iteration,
                status="promoted" if decision["promoted"] else "rejected",
                created_at=self.clock(),
            )
            self.store.add_model_version(mv)
        self._score_stop_set(clf, mv.id)
        with self._load_lock:
            self._remember(version_id, clf)
        return mv

    # -- the slow lane -------------------------------------------------------------------
    def slow_due(self) -> tuple[bool, str]:
        """Whether the slow lane should train now: it is configured, the training set has two
        classes, and ``slow_min_new_labels`` label changes arrived since its last version (or it
        has none yet)."""
        slow = self.slow_trainer
        if slow is None:
            return False, "no slow lane (slow_model is not set)"
        ts = self.store.training_set()
        if len(set(ts.labels)) < 2:
            return False, f"{len(ts)} labeled items; the slow lane needs 2 classes"
        mine = [mv for mv in self.store.model_versions() if mv.trainer == slow.name]
        if not mine:
            return True, f"no {slow.name} model yet ({len(ts)} labels)"
        changes = self.store.label_revision() - mine[-1].label_revision
        if changes >= self.slow_min_new_labels:
            return True, (
                f"{changes} label changes since {mine[-1].id} "
                f"(threshold {self.slow_min_new_labels})"
            )
        return False, (
            f"{changes} label changes since {mine[-1].id}, below the threshold "
            f"{self.slow_min_new_labels}"
        )

    def train_slow(self, progress: Progress | None = None) -> ModelVersion:
        """Train the slow lane's model on the current training set (it does not hold the
        iteration: the fast lane keeps training and selecting meanwhile), embed the pool with it
        so that its first selection waits for nothing, then record it. It replaces the current
        model only when not worse on the same held-out data (``not-worse``, always)."""
        slow = self.slow_trainer
        if slow is None:
            raise ConfigError("no slow lane is configured.", "set slow_model (e.g. setfit).")
        progress = progress or self.progress
        revision = self.store.label_revision()
        ts = self.store.training_set()
        seed = self.seed + revision
        kwargs: dict[str, Any] = {}
        extra: dict[str, Any] = {"seed": seed}
        if getattr(slow, "warm_start", False):
            # the lane's newest version, promoted or not: its tuning is what goes on
            mine = [mv for mv in self.store.model_versions() if mv.trainer == slow.name]
            last = mine[-1] if mine else None  # oldest first
            if (
                last is not None
                and Path(last.path).is_dir()
                and _same_start(last.config, slow.config())
            ):
                kwargs["previous"] = Path(last.path)
            extra["warm_start_from"] = last.id if kwargs and last is not None else None
        t0 = time.perf_counter()
        clf = slow.train(
            list(ts.texts),
            list(ts.labels),
            classes=self.classes,
            seed=seed,
            progress=progress,
            **kwargs,
        )
        metrics: dict[str, Any] = {"train_seconds": round(time.perf_counter() - t0, 3)}
        if isinstance(clf, EmbeddingClassifier):  # fills its embedding cache
            t1 = time.perf_counter()
            embedded = 0
            for _, texts in self.store.iter_pool_texts(self.pool_chunk_size):
                clf.embed(texts, progress=progress)
                embedded += len(texts)
            metrics["pool_embed_seconds"] = round(time.perf_counter() - t1, 3)
            metrics["pool_embedded"] = embedded
        return self._record(
            clf,
            slow,
            iteration=None,
            revision=revision,
            n_labels=len(ts),
            rule="not-worse",
            metrics=metrics,
            extra=extra,
            ties=len(ts.ties),
            agreement=ts.agreement,
            lane="slow",
        )

    def _promotion(
        self, clf: Classifier, metrics: dict[str, Any], rule: str, trainer_name: str
    ) -> dict[str, Any]:
        """Whether a new model replaces the current one, with the rule and the numbers. With a
        slow lane, a model replaces one of the other lane only when not worse."""
        if rule not in ("always", "not-worse"):
            raise ConfigError(
                f"promotion rule must be 'always' or 'not-worse', got {rule!r}.",
                "pick one of the two.",
            )
        current = self.current_model()
        if (
            self.slow_trainer is not None
            and current is not None
            and current.trainer != trainer_name
        ):
            rule = "not-worse"
        if rule == "always" or current is None:
            return {
                "rule": rule,
                "promoted": True,
                "reason": "rule always" if rule == "always" else "no current model",
            }
        # the same held-out data for both: the labeled eval sample when it is big enough, else test
        split = "eval" if metrics.get("eval_n", 0) >= MIN_EVAL_FOR_PROMOTION else "test"
        held = self.store.training_set(split)
        if not len(held):
            return {"rule": rule, "promoted": True, "reason": "no held-out labels to compare on"}
        cand = metrics[f"{split}_accuracy"]
        cur_clf = self.load_classifier(current)
        cur = evaluate(cur_clf, held.texts, held.labels, split)[f"{split}_accuracy"]
        ok = cand >= cur - self.promotion_tolerance
        return {
            "rule": rule,
            "promoted": bool(ok),
            "metric": f"{split}_accuracy",
            "n": len(held),
            "candidate": cand,
            "current": cur,
            "current_id": current.id,
            "tolerance": self.promotion_tolerance,
            "reason": f"{cand:.4f} {'>=' if ok else '<'} {cur:.4f} - {self.promotion_tolerance:g} ({current.id})",
        }

    # -- the nightly retrain ---------------------------------------------------------------
    def waiting(self) -> list[Query]:
        """Queries sent to the labeling tool that have no answer yet."""
        sent = self.store.queries(sent=True)
        answered = (
            {lab.item_id for lab in self.store.labels([q.item_id for q in sent])} if sent else set()
        )
        return [q for q in sent if q.item_id not in answered]

    def nightly(self) -> dict[str, Any]:
        """Retrain on all labels, evaluate on held-out data, promote only if not worse than the
        current model (the rule and the numbers are recorded with the version), and when promoted
        refresh the predictions and queue order of the tasks still waiting for an answer.
        The caller holds the iteration lease."""
        self.sync()
        need, why = self.needs_training(force=True)
        if not need:
            return {"trained": False, "reason": why}
        mv = self.train(None, rule="not-worse", retune=True)
        report: dict[str, Any] = {
            "trained": True,
            "model_version": mv.id,
            "status": mv.status,
            "promotion": dict(mv.metrics["promotion"]),
            "tuning": (mv.config.get("tuning") or {}).get("source"),
            "refreshed": 0,
        }
        if mv.status == "promoted":
            report["refreshed"] = self.refresh_waiting(mv)
        return report

    def iteration_due(self, refill_below: int) -> tuple[bool, str]:
        """Whether an iteration should run now, and why: the one rule of `alloop serve`'s
        worker and `alloop run` (resume an unfinished iteration; the first one; enough new
        labels to retrain; or fewer than ``refill_below`` sent items still awaiting an answer
        while the pool has items and no stopping criterion stopped the loop)."""
        store = self.store
        unfinished = store.unfinished_iteration()
        if unfinished is not None:
            return True, f"resume iteration {unfinished.number} at step {unfinished.step}"
        if not store.iterations():
            return True, "first iteration"
        need, why = self.needs_training()
        if need:
            return True, why
        waiting = len(self.waiting())
        if waiting < refill_below and store.count_pool() and not self.stopped():
            return True, f"queue refill: {waiting} sent item(s) await an answer"
        return False, why

    def refresh_waiting(self, mv: ModelVersion) -> int:
        """Score the tasks still waiting for an answer with ``mv`` (the strategy's scores, or
        the queue's order for a batch strategy) and send their new predictions and order to the
        labeling tool; the number refreshed (0 when the tool cannot refresh). The caller holds
        the iteration lease (the tool is used by one thread at a time)."""
        refresh = getattr(self.tool, "refresh_predictions", None)
        if refresh is None:
            return 0
        waiting = self.waiting()
        if not waiting:
            return 0
        clf = self.load_classifier(mv)
        items = self.store.get_items([q.item_id for q in waiting])
        rng = np.random.default_rng([self.seed, 0, 2])
        fresh = self.measure.scores(self._inputs(items, clf, rng), rng)
        # a batch strategy scores no single item: the queue keeps its order
        scores = fresh if fresh is not None else [q.score for q in waiting]
        rescored = [
            Query(
                item_id=q.item_id,
                iteration=q.iteration,
                score=float(sc),
                rank=q.rank,
                strategy=self.strategy,
                model_version=mv.id,
                kind=q.kind,
            )
            for q, sc in zip(waiting, scores, strict=True)
        ]
        refresh(self._requests(rescored, mv))
        return len(rescored)

    # -- one iteration -------------------------------------------------------------------
    def run_iteration(self, *, force_train: bool = False, k: int | None = None) -> IterationReport:
        """Run (or resume) one iteration. ``k`` overrides the batch size (0 = train and
        evaluate only)."""
        it = self.store.unfinished_iteration()
        resumed_from = it.step if it is not None else None
        if it is None:
            it = self.store.begin_iteration({"strategy": self.strategy})
        timings: dict[str, float] = {}
        trained = False
        rng = np.random.default_rng([self.seed, it.number])

        if it.step == "begin":
            t = time.perf_counter()
            self.sync()
            timings["sync"] = time.perf_counter() - t
            need, why = self.needs_training(force_train)
            if need:
                t = time.perf_counter()
                self.train(it.number)
                trained = True
                timings["train"] = time.perf_counter() - t
                it = self.store.update_iteration(it.number, info={"train_reason": why})
            else:
                it = self.store.update_iteration(
                    it.number, step="trained", info={"train_reason": why, "trained": False}
                )

        current = self.current_model()
        if it.step == "trained":
            t = time.perf_counter()
            if k is None:
                k = self.batch_size if current is not None else self.initial_batch_size
            stopping = self.stopping_status() if current is not None else None
            info: dict[str, Any] = {}
            if stopping is not None:
                info["stopping"] = stopping
                if stopping["stopped"]:
                    k = 0  # labels are still ingested and models retrained; no new batch
            if info:
                it = self.store.update_iteration(it.number, info=info)
            timings["stopping"] = time.perf_counter() - t
            t = time.perf_counter()
            queries = self._select(it.number, k, current, rng)
            timings["select"] = time.perf_counter() - t
            self.store.record_queries(it.number, queries)
            picked: dict[str, Any] = {"selected": len(queries)}
            if current is not None:  # which model picked this batch (with a slow lane: either)
                picked["picked_by"] = {"model_version": current.id, "trainer": current.trainer}
            it = self.store.update_iteration(it.number, info=picked)

        sent = 0
        if it.step == "selected":
            t = time.perf_counter()
            pending = self.store.queries(iteration=it.number, sent=False)
            if pending:
                self.tool.send(self._requests(pending, current))
                self.store.mark_sent([q.item_id for q in pending])
                sent = len(pending)
            timings["send"] = time.perf_counter() - t
            it = self.store.update_iteration(it.number, step="pushed")

        if it.step == "pushed":
            it = self.store.update_iteration(it.number, step="done", status="done", timings=timings)

        mv = self.store.get_model_version(it.model_version) if it.model_version else None
        return IterationReport(
            number=it.number,
            trained=trained,
            model_version=mv.id if mv else None,
            n_labels=mv.n_labels if mv else 0,
            metrics=dict(mv.metrics) if mv else {},
            selected=len(self.store.queries(iteration=it.number)),
            sent=sent,
            resumed_from=resumed_from,
            timings=timings,
            stopping=it.info.get("stopping"),
        )

    def _eval_queries(self, iteration: int) -> list[Query]:
        """Top up the ``eval`` sample (uniformly random pool items, never trained on) to
        ``eval_sample_size`` and return queries for its items not asked yet. Idempotent: a crash
        after moving items but before recording their queries is repaired on resume."""
        if self.eval_sample_size <= 0:
            return []
        have = self.store.items("eval")
        missing = self.eval_sample_size - len(have)
        if missing > 0:
            rng = np.random.default_rng([self.seed, iteration, 1])  # its own stream
            self.store.assign_split(self._pool_sample(rng, missing), "eval")
            have = self.store.items("eval")
        asked = {q.item_id for q in self.store.queries()}
        return [
            Query(
                item_id=it.id,
                iteration=iteration,
                score=0.0,
                rank=0,
                strategy="eval-random",
                kind="eval",
            )
            for it in have
            if it.id not in asked
        ]

    def _select(
        self, iteration: int, k: int, current: ModelVersion | None, rng: np.random.Generator
    ) -> list[Query]:
        evals = self._eval_queries(iteration)
        picked = self._select_pool(iteration, k, current, rng)
        if not evals:
            return picked
        # the evaluation sample goes first in the queue (score of the batch's best), then the rest
        top = max((q.score for q in picked), default=0.0)
        evals = [
            Query(
                item_id=q.item_id,
                iteration=iteration,
                score=top,
                rank=r,
                strategy=q.strategy,
                kind="eval",
            )
            for r, q in enumerate(evals)
        ]
        return evals + [
            Query(
                item_id=q.item_id,
                iteration=iteration,
                score=q.score,
                rank=len(evals) + q.rank,
                strategy=q.strategy,
                model_version=q.model_version,
            )
            for q in picked
        ]

    def _pool_ids_at(self, positions: np.ndarray) -> dict[int, str]:
        """The ids at ``positions`` of the pool in id order, read chunk by chunk (ids only):
        the pool is never loaded whole."""
        wanted = np.sort(np.asarray(positions, dtype=np.int64))
        found: dict[int, str] = {}
        start = 0
        j = 0
        for chunk in self.store.iter_pool_ids(max(self.pool_chunk_size, 100_000)):
            end = start + len(chunk)
            while j < wanted.size and wanted[j] < end:
                found[int(wanted[j])] = chunk[int(wanted[j]) - start]
                j += 1
            start = end
            if j >= wanted.size:
                break
        return found

    def _pool_sample(self, rng: np.random.Generator, count: int) -> list[str]:
        """Ids of ``count`` pool items drawn uniformly (positions ``rng.permutation(n)[:count]``
        in id order)."""
        positions = np.sort(rng.permutation(self.store.count_pool())[:count])
        found = self._pool_ids_at(positions)
        return [found[int(p)] for p in positions if int(p) in found]

    def _streamable(self) -> bool:
        """Whether the strategy scores each item from its own probabilities only (then the pool
        can be scored chunk by chunk with a running top-k: the same selection in bounded
        memory)."""
        return self.measure.select is None and self.measure.needs <= {"proba"}

    def _select_streamed(
        self, iteration: int, k: int, current: ModelVersion, rng: np.random.Generator
    ) -> list[Query] | None:
        """Selection over the pool read ``pool_chunk_size`` items at a time, or None when the
        whole pool is to be loaded (it fits one chunk, or the strategy needs it whole and no
        ``max_candidates`` pre-filter is set).

        - a score strategy over probabilities: each chunk is scored and merged into a running
          top-k (memory: one chunk + k);
        - otherwise, with ``max_candidates``: the ``max_candidates`` most uncertain items by
          margin are kept the same way and the strategy runs on them only (its embeddings,
          committee, clustering); cluster-margin with ``max_candidates`` >= 10 k keeps the
          candidates it has on the whole pool (its k-means seeding draws differ)."""
        n = self.store.count_pool()
        streamable = self._streamable()
        if n <= self.pool_chunk_size or (not streamable and self.max_candidates is None):
            return None
        clf = self.load_classifier(current)
        keep = k if streamable else int(self.max_candidates or 0)
        if keep >= n:
            return None
        best_ids: list[str] = []
        best_texts: list[str] = []
        best_scores = np.empty(0, dtype=np.float64)
        needs_proba = not streamable or "proba" in self.measure.needs
        with self.progress.task("scoring the pool", total=n) as advance:
            for ids, texts in self.store.iter_pool_texts(self.pool_chunk_size):
                proba = clf.predict_proba(texts) if needs_proba else None
                if streamable:
                    inputs = strategies.SelectionInputs(proba=proba, size=len(ids))
                    scores = np.asarray(self.measure.scores(inputs, rng), dtype=np.float64)
                else:
                    assert proba is not None
                    scores = strategies.margin(proba)
                all_ids, all_texts = best_ids + ids, best_texts + texts
                merged = np.concatenate([best_scores, scores])
                top = strategies.top_k(merged, keep, rng)
                best_ids = [all_ids[i] for i in top]
                best_texts = [all_texts[i] for i in top]
                best_scores = merged[top]
                advance(len(ids))
        if streamable:
            return [
                Query(
                    item_id=item_id,
                    iteration=iteration,
                    score=float(sc),
                    rank=r,
                    strategy=self.strategy,
                    model_version=current.id,
                )
                for r, (item_id, sc) in enumerate(zip(best_ids, best_scores, strict=True))
            ]
        order = sorted(range(len(best_ids)), key=lambda r: best_ids[r])  # the pool's order
        candidates = [Item(id=best_ids[r], text=best_texts[r]) for r in order]
        return self._choose(iteration, k, current, candidates, rng)

    def _select_pool(
        self, iteration: int, k: int, current: ModelVersion | None, rng: np.random.Generator
    ) -> list[Query]:
        if k <= 0:
            return []
        if current is not None:
            streamed = self._select_streamed(iteration, k, current, rng)
            if streamed is not None:
                return streamed
        elif self.cold_start == "random" and (n := self.store.count_pool()) > self.pool_chunk_size:
            order = rng.permutation(n)[:k]  # as below: the first k of a permutation, in order
            found = self._pool_ids_at(order)
            return [
                Query(
                    item_id=found[int(pos)],
                    iteration=iteration,
                    score=0.0,
                    rank=r,
                    strategy="cold-start-random",
                )
                for r, pos in enumerate(order)
            ]
        pool = self.store.pool()
        if not pool:
            return []
        texts = [it.text for it in pool]
        if current is None:
            if self.cold_start == "random":
                idx = rng.permutation(len(pool))[:k]
            else:
                assert self.embedder is not None  # checked in __init__
                emb = self.embedder.embed(texts, progress=self.progress)
                pick = (
                    strategies.typiclust
                    if self.cold_start == "typiclust"
                    else strategies.diverse_sample
                )
                idx = pick(emb, k, rng)
            name = f"cold-start-{self.cold_start}"
            return [
                Query(item_id=pool[i].id, iteration=iteration, score=0.0, rank=r, strategy=name)
                for r, i in enumerate(idx)
            ]
        return self._choose(iteration, k, current, pool, rng)

    def _choose(
        self,
        iteration: int,
        k: int,
        current: ModelVersion,
        pool: Sequence[Any],
        rng: np.random.Generator,
    ) -> list[Query]:
        """The strategy's batch from ``pool`` (all of it in memory)."""
        clf = self.load_classifier(current)
        try:
            idx, scores = self.measure.choose(self._inputs(pool, clf, rng), k, rng)
        except strategies.StrategyInputError as e:
            raise StrategyError(
                f"the model {current.id} gave inputs the strategy {self.strategy} cannot use: {e}"
            ) from e
        n = len(idx)
        return [
            Query(
                item_id=pool[i].id,
                iteration=iteration,
                # a batch strategy without scores: the order it chose, best first
                score=float(scores[i]) if scores is not None else float(n - r) / max(n, 1),
                rank=r,
                strategy=self.strategy,
                model_version=current.id,
            )
            for r, i in enumerate(idx)
        ]

    def _inputs(
        self, items: Sequence[Any], clf: Classifier, rng: np.random.Generator
    ) -> strategies.SelectionInputs:
        """What the strategy needs for ``items``, built only when it needs it."""
        needs = self.measure.needs
        texts = [it.text for it in items]
        got: dict[str, Any] = {"size": len(items)}
        if "proba" in needs:
            got["proba"] = clf.predict_proba(texts, progress=self.progress)
        if "proba_samples" in needs:
            got["proba_samples"] = self._proba_samples(texts, clf, rng)
        if needs & {"labeled_embeddings", "labels", "labeled_proba"}:
            ts = self.store.training_set()
        if "embeddings" in needs:
            got["embeddings"] = self._embed(texts, clf)
        if "labeled_embeddings" in needs:
            got["labeled_embeddings"] = self._embed(list(ts.texts), clf)
        if "labeled_proba" in needs:
            got["labeled_proba"] = clf.predict_proba(list(ts.texts), progress=self.progress)
        if "labels" in needs:
            index = {c: j for j, c in enumerate(self.classes)}
            got["labels"] = np.array([index[y] for y in ts.labels], dtype=np.intp)
        return strategies.SelectionInputs(**got)

    def _embed(self, texts: list[str], clf: Classifier) -> np.ndarray:
        if self.embedder is not None:
            return self.embedder.embed(texts, progress=self.progress)
        if isinstance(clf, EmbeddingClassifier):
            return clf.embed(texts, progress=self.progress)
        raise ConfigError("the strategy needs embeddings and there is no embedder.", "pass one.")

    def _proba_samples(
        self, texts: list[str], clf: Classifier, rng: np.random.Generator
    ) -> np.ndarray:
        """``(n, T, C)``: the classifier's own samples when it has them (MC dropout), else a
        bagging committee of the trainer: ``committee_size`` models, each trained on a
        bootstrap resample of the training set drawn within each class (Breiman 1996;
        query-by-bagging, Abe & Mamitsuka 1998)."""
        seed = int(rng.integers(0, 2**31 - 1))
        if isinstance(clf, SamplingClassifier):
            return clf.predict_proba_samples(texts, self.committee_size, seed, self.progress)
        ts = self.store.training_set()
        labels = np.array(ts.labels)
        boot = np.random.default_rng(seed)
        members = []
        with self.progress.task("committee", total=self.committee_size) as advance:
            for t in range(self.committee_size):
                idx = class_bootstrap(labels, boot)
                member = self.trainer.train(
                    [ts.texts[i] for i in idx],
                    [ts.labels[i] for i in idx],
                    classes=self.classes,
                    seed=seed + t,
                )
                members.append(member.predict_proba(texts))
                advance(1)
        return np.stack(members, axis=1)

    def _requests(
        self, queries: Sequence[Query], current: ModelVersion | None
    ) -> list[LabelRequest]:
        items = self.store.get_items([q.item_id for q in queries])
        if current is None:
            return [
                LabelRequest(item=item, kind=q.kind, score=q.score)
                for item, q in zip(items, queries, strict=True)
            ]
        clf = self.load_classifier(current)
        proba = clf.predict_proba([item.text for item in items])
        top = np.argmax(proba, axis=1)
        return [
            LabelRequest(
                item=item,
                kind=q.kind,
                score=q.score,
                prediction=clf.classes[j],
                confidence=float(proba[n, j]),
                model_version=current.id,
            )
            for n, (item, q, j) in enumerate(zip(items, queries, top, strict=True))
        ]
