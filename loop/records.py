"""Domain records: plain frozen dataclasses, no I/O.

Splits:
- ``train``: the pool and the training set (an item leaves the pool once queried, labeled or skipped);
- ``test``: held-out ground truth, never trained on; every model version is evaluated on it;
- ``eval``: a uniformly random sample sent for labeling but never trained on (unbiased metrics
  when actively selected labels are a biased sample).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

Split = Literal["train", "test", "eval"]
SPLITS: tuple[str, ...] = ("train", "test", "eval")

IterationStep = Literal["begin", "trained", "selected", "pushed", "done"]
ITERATION_STEPS: tuple[str, ...] = ("begin", "trained", "selected", "pushed", "done")


@dataclass(frozen=True, slots=True)
class Item:
    """One text to classify, keyed by a stable id that the user (or the dataset) owns."""

    id: str
    text: str
    split: str = "train"
    meta: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Label:
    """One annotator's answer for one item.

    Identity is ``(source, annotation_id, item_id)``: writing the same identity again is a no-op
    when the value is unchanged and an update when it changed. A skip is a real outcome
    (``skipped=True``, ``value=None``): the item leaves the pool and is not trained on.
    """

    item_id: str
    value: str | None
    source: str  # "import" | "oracle" | "label-studio" | ...
    annotation_id: str
    annotator: str | None = None
    created_at: datetime | None = None
    skipped: bool = False


@dataclass(frozen=True, slots=True)
class LabelRejection:
    """An answer that could not become a label (a choice outside the classes, a malformed
    result). Recorded for people to see; never trained on. Identity as for :class:`Label`."""

    item_id: str
    source: str
    annotation_id: str
    reason: str
    created_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class LabelWriteResult:
    inserted: int = 0
    updated: int = 0
    unchanged: int = 0
    withdrawn: int = 0


@dataclass(frozen=True, slots=True)
class LabelSnapshot:
    """The complete current labels of ``source`` for each item in ``item_ids``.

    Ingesting a snapshot inserts or updates what is given and withdraws every other active label
    of that source on those items (a deleted annotation disappears). Every label in ``labels``
    must belong to ``source`` and to one of ``item_ids``.
    """

    source: str
    item_ids: tuple[str, ...]
    labels: tuple[Label, ...]
    # the labeling tool's own "as of" time for this snapshot; the next fetch starts from it
    # (None: nothing new was seen, keep the previous cursor)
    cursor: datetime | None = None
    # answers on those items that could not become labels (recorded, never trained on)
    rejections: tuple[LabelRejection, ...] = ()
    # when the fetch behind the snapshot started (the store's clock): labels the store wrote at
    # or after it (e.g. from a webhook during the fetch) are newer than the snapshot and are
    # neither withdrawn nor overwritten by it. None: the snapshot is authoritative.
    as_of: datetime | None = None


@dataclass(frozen=True, slots=True)
class AddItemsResult:
    added: int
    existing: int


@dataclass(frozen=True, slots=True)
class TrainingSet:
    """The labels training uses: one aggregated label per item (majority vote over active,
    non-skipped labels; ties are left out and listed in ``ties``)."""

    item_ids: tuple[str, ...]
    texts: tuple[str, ...]
    labels: tuple[str, ...]
    ties: tuple[str, ...] = ()
    # mean pairwise agreement over items with >= 2 answers; None when there are none
    agreement: float | None = None

    def __len__(self) -> int:
        return len(self.item_ids)


@dataclass(frozen=True, slots=True)
class Query:
    """One item the loop asked for, in one iteration, with why (score, rank, strategy)."""

    item_id: str
    iteration: int
    score: float
    rank: int
    strategy: str
    model_version: str | None = None
    kind: str = "query"  # "query" (actively selected) | "eval" (random evaluation sample)
    sent: bool = False


@dataclass(frozen=True, slots=True)
class ModelVersion:
    id: str
    trainer: str
    path: str
    classes: tuple[str, ...]
    n_labels: int
    label_revision: int
    metrics: Mapping[str, Any]
    config: Mapping[str, Any]
    iteration: int | None = None
    status: str = "candidate"  # "candidate" | "promoted" | "rejected"
    created_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class Iteration:
    number: int
    status: str  # "running" | "done" | "failed"
    step: str  # one of ITERATION_STEPS
    model_version: str | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    timings: Mapping[str, float] = field(default_factory=dict)
    info: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class LabelRequest:
    """What the loop sends to a labeling tool for one item."""

    item: Item
    kind: str  # "query" | "eval"
    score: float  # the strategy's score: higher = ask first
    prediction: str | None = None  # the model's top class, shown as a pre-annotation
    confidence: float | None = None  # the model's probability for ``prediction``
    model_version: str | None = None


@dataclass(frozen=True, slots=True)
class JobRequest:
    """A job asked of the worker through the database (by a web process, the ML backend or
    another front): ``kind`` iteration | retrain | nightly | reconcile. Taken once, by one
    worker (``taken_by``)."""

    id: int
    kind: str
    source: str
    push: bool = False
    requested_at: datetime | None = None
    taken_by: str | None = None
    taken_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class Job:
    """One job a worker ran or runs: ``lane`` fast (iteration | retrain | nightly | refresh) or
    slow (slow-train); ``status`` running | done | failed | interrupted (its process died).
    ``progress``: the steps in flight while it runs (description, total, done, seconds)."""

    id: int
    lane: str
    kind: str
    holder: str
    sources: tuple[str, ...]
    reason: str
    status: str
    started_at: datetime
    finished_at: datetime | None = None
    result: Mapping[str, Any] = field(default_factory=dict)
    error: str | None = None
    lease_lost: bool = False
    progress: tuple[Mapping[str, Any], ...] = ()
    updated_at: datetime | None = None

    def as_dict(self, now: datetime | None = None) -> dict[str, Any]:
        end = self.finished_at or now or self.updated_at or self.started_at
        return {
            "id": self.id,
            "lane": self.lane,
            "kind": self.kind,
            "holder": self.holder,
            "sources": list(self.sources),
            "reason": self.reason,
            "status": self.status,
            "started_at": self.started_at.isoformat(),
            "finished_at": self.finished_at.isoformat() if self.finished_at else None,
            "seconds": round((end - self.started_at).total_seconds(), 3),
            "result": dict(self.result),
            "error": self.error,
            "lease_lost": self.lease_lost,
        }
