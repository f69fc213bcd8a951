"""The contracts the controller depends on. Implementations live in ``connectors``.

Every contract has one test suite run against every implementation (tests/contracts/).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from loop.progress import SILENT, Progress
from loop.records import (
    AddItemsResult,
    Item,
    Iteration,
    Job,
    JobRequest,
    Label,
    LabelRejection,
    LabelRequest,
    LabelSnapshot,
    LabelWriteResult,
    ModelVersion,
    Query,
    TrainingSet,
)


@runtime_checkable
class Classifier(Protocol):
    """A trained model. There is no "not fitted" state: a Classifier exists only once trained."""

    @property
    def classes(self) -> tuple[str, ...]: ...

    @property
    def version(self) -> str: ...

    def predict_proba(self, texts: Sequence[str], progress: Progress = SILENT) -> np.ndarray:
        """``(len(texts), len(classes))`` float64, rows sum to 1, columns in ``classes`` order."""
        ...

    def save(self, path: Path) -> None:
        """Write everything needed by ``Trainer.load`` into the directory ``path``."""
        ...


@runtime_checkable
class EmbeddingClassifier(Protocol):
    """A classifier that also gives its own representation of texts (optional capability;
    checked with ``isinstance``): the pool's embeddings for diversity strategies."""

    def embed(self, texts: Sequence[str], progress: Progress = SILENT) -> np.ndarray:
        """``(len(texts), dim)`` float32, L2-normalised rows."""
        ...


@runtime_checkable
class SamplingClassifier(Protocol):
    """A classifier that gives several probability samples per text (MC dropout, an
    ensemble); optional capability, checked with ``isinstance``. Without it the controller
    builds a bagging committee of the trainer."""

    def predict_proba_samples(
        self, texts: Sequence[str], n_samples: int, seed: int, progress: Progress = SILENT
    ) -> np.ndarray:
        """``(len(texts), n_samples, len(classes))`` float64, each row sums to 1."""
        ...


@runtime_checkable
class Trainer(Protocol):
    name: str

    def train(
        self,
        texts: Sequence[str],
        labels: Sequence[str],
        *,
        classes: Sequence[str],
        seed: int,
        progress: Progress = SILENT,
    ) -> Classifier:
        """Fit on ``texts``/``labels``. ``classes`` is the full class list (columns of
        ``predict_proba``), which may include classes with no example yet. Raises ModelError
        when fewer than 2 distinct labels are given."""
        ...

    def load(self, path: Path) -> Classifier: ...

    def config(self) -> Mapping[str, Any]:
        """The training configuration recorded with every model version."""
        ...


@runtime_checkable
class Embedder(Protocol):
    """Sentence embeddings (for cold start diversity and embedding-based strategies)."""

    def embed(self, texts: Sequence[str], progress: Progress = SILENT) -> np.ndarray:
        """``(len(texts), dim)`` float32, L2-normalised rows."""
        ...


@runtime_checkable
class LabelingTool(Protocol):
    """Where requests go and labels come from (Label Studio, or the simulation oracle)."""

    def send(self, requests: Sequence[LabelRequest]) -> None:
        """Idempotent on the item id: an item already sent is not sent again."""
        ...

    def fetch_labels(self, since: datetime | None) -> LabelSnapshot:
        """The full current labels of every item whose labels changed after ``since`` (all
        items with labels when None). ``since`` is the ``cursor`` of an earlier snapshot, in the
        tool's own clock; the tool re-reads whatever margin that clock needs (ingestion is
        idempotent). Ingest with ``Store.sync_labels``."""
        ...


@runtime_checkable
class Store(Protocol):
    """Persistent state of one project (one database)."""

    # -- items ---------------------------------------------------------------------------
    def add_items(self, items: Iterable[Item]) -> AddItemsResult:
        """All-or-nothing. An existing id with the same text and the same split it was first
        added with counts as existing, also after ``assign_split`` moved it (the stored item
        keeps its current split). An existing id with a different text or another original
        split raises StoreError and nothing is written; so does a text longer than the store's
        ``max_text_chars`` or any string breaking the character rule of :mod:`loop.text`
        (every string the store writes is held to that rule, on every database)."""
        ...

    def get_items(self, ids: Sequence[str]) -> list[Item]:
        """In the order of ``ids``; an unknown id raises StoreError."""
        ...

    def items(self, split: str | None = None) -> list[Item]: ...

    def count_items(self, split: str | None = None) -> int: ...

    def pool(self) -> list[Item]:
        """``train`` items never queried and without any label, answered, skipped or withdrawn
        (the rule of ``assign_split``, so pool items can always move); ordered by id."""
        ...

    def count_pool(self) -> int:
        """``len(pool())``, counted without loading the items."""
        ...

    def iter_pool(self, chunk_size: int = 10_000, *, meta: bool = True) -> Iterator[list[Item]]:
        """The pool in id order, ``chunk_size`` items at a time (bounded memory); ``meta=False``:
        without ``Item.meta``."""
        ...

    def iter_pool_texts(self, chunk_size: int = 10_000) -> Iterator[tuple[list[str], list[str]]]:
        """The pool as ``(ids, texts)`` chunks in id order (no ``Item`` per row)."""
        ...

    def iter_pool_ids(self, chunk_size: int = 100_000) -> Iterator[list[str]]:
        """The pool's ids in id order, ``chunk_size`` at a time."""
        ...

    def assign_split(self, item_ids: Sequence[str], split: str) -> int:
        """Move items to another split (e.g. pool items into the ``eval`` sample). Only items
        that were never queried and never had a label (not even a skipped or withdrawn one)
        may move, which every ``pool()`` item satisfies; otherwise StoreError and nothing
        moves. Items already in ``split`` are left as they are. The split an item was first
        added with is kept, so ``add_items`` of the same data still counts it as existing.
        Returns how many moved."""
        ...

    # -- labels --------------------------------------------------------------------------
    def add_labels(self, labels: Iterable[Label]) -> LabelWriteResult:
        """Idempotent on ``(source, annotation_id, item_id)``: same value → unchanged, other
        value → updated (the new one replaces the old). A label whose ``value`` is None and
        ``skipped`` is False withdraws that annotation. Unknown item ids raise StoreError and
        nothing of the batch is written."""
        ...

    def sync_labels(self, snapshot: LabelSnapshot) -> LabelWriteResult:
        """Make the active labels of ``snapshot.source`` on each of ``snapshot.item_ids`` exactly
        ``snapshot.labels``: insert or update those given (as ``add_labels``), withdraw the
        others (counted in ``withdrawn``). Labels the store wrote at or after
        ``snapshot.as_of`` are newer than the snapshot and are left as they are. One
        transaction; idempotent."""
        ...

    def record_rejections(self, rejections: Iterable[LabelRejection]) -> int:
        """Record answers that could not become labels; idempotent on (source, annotation_id,
        item_id) (a later reason replaces the earlier). Returns how many were new."""
        ...

    def rejections(self) -> list[LabelRejection]:
        """Oldest first."""
        ...

    def labels(self, item_ids: Sequence[str] | None = None) -> list[Label]:
        """Active (not withdrawn) labels, skips included."""
        ...

    def label_revision(self) -> int:
        """A counter that grows with every label insert, update or withdrawal."""
        ...

    def training_set(self, split: str = "train") -> TrainingSet: ...

    # -- queries -------------------------------------------------------------------------
    def record_queries(self, iteration: int, queries: Sequence[Query]) -> int:
        """Record the iteration's selection and move the iteration to step ``selected`` in
        the same transaction. Recording again for the same iteration is a no-op (returns 0)."""
        ...

    def queries(self, iteration: int | None = None, *, sent: bool | None = None) -> list[Query]: ...

    def mark_sent(self, item_ids: Sequence[str]) -> None: ...

    # -- model versions ------------------------------------------------------------------
    def add_model_version(self, mv: ModelVersion) -> None:
        """Record a model version; when ``mv.iteration`` is set, that iteration moves to step
        ``trained`` with this model version, in the same transaction."""
        ...

    def get_model_version(self, version_id: str) -> ModelVersion: ...

    def model_versions(self) -> list[ModelVersion]:
        """Oldest first."""
        ...

    def set_model_status(self, version_id: str, status: str) -> None: ...

    # -- iterations ----------------------------------------------------------------------
    def begin_iteration(self, info: Mapping[str, Any]) -> Iteration:
        """Start iteration ``last + 1`` (status running, step begin). Raises StoreError if an
        unfinished iteration exists (resume that one instead)."""
        ...

    def unfinished_iteration(self) -> Iteration | None: ...

    def update_iteration(
        self,
        number: int,
        *,
        step: str | None = None,
        status: str | None = None,
        timings: Mapping[str, float] | None = None,
        info: Mapping[str, Any] | None = None,
    ) -> Iteration:
        """``timings`` and ``info`` are merged into what is there."""
        ...

    def iterations(self) -> list[Iteration]: ...

    # -- leases: one holder at a time across processes and machines ------------------------
    def acquire_lease(self, name: str, holder: str, ttl_seconds: float) -> bool:
        """Take lease ``name`` for ``holder`` until now + ttl, if it is free, expired, or
        already held by ``holder`` (then it is renewed). Atomic across processes and machines
        (the database decides). Returns whether ``holder`` now holds it."""
        ...

    def renew_lease(self, name: str, holder: str, ttl_seconds: float) -> bool:
        """Extend a lease ``holder`` holds; False when it lost it (expired and taken)."""
        ...

    def release_lease(self, name: str, holder: str) -> None:
        """Give the lease up if ``holder`` holds it (a no-op otherwise)."""
        ...

    def lease(self, name: str) -> tuple[str, datetime] | None:
        """``(holder, expires_at)`` of an unexpired lease, else None."""
        ...

    # -- jobs: what a web process asks of the worker, and what the worker ran ----------------
    def request_job(self, kind: str, source: str, *, push: bool = False) -> int:
        """Ask the worker (any process) for a job: ``kind`` iteration | retrain | nightly |
        reconcile. Returns the request's id."""
        ...

    def job_requests(self) -> list[JobRequest]:
        """Requests no worker took yet, oldest first."""
        ...

    def take_job_requests(self, holder: str) -> list[JobRequest]:
        """Take every untaken request for ``holder``; each goes to exactly one taker."""
        ...

    def start_job(
        self, lane: str, kind: str, holder: str, sources: Sequence[str], reason: str
    ) -> Job:
        """Record a job starting now (``lane`` fast | slow, status running)."""
        ...

    def update_job(
        self,
        job_id: int,
        *,
        status: str | None = None,
        result: Mapping[str, Any] | None = None,
        error: str | None = None,
        lease_lost: bool | None = None,
        progress: Sequence[Mapping[str, Any]] | None = None,
    ) -> Job:
        """Change a running job's record; a finished status stamps ``finished_at``. A
        finished job stays as it is."""
        ...

    def jobs(
        self, *, lane: str | None = None, status: str | None = None, limit: int | None = 10
    ) -> list[Job]:
        """The newest ``limit`` job records, oldest first."""
        ...

    # -- key/value metadata (classes, sync cursor, ...) ------------------------------------
    def get_meta(self, key: str, default: Any = None) -> Any: ...

    def set_meta(self, key: str, value: Any) -> None: ...

    def close(self) -> None: ...
